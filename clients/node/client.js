// An example zembed-serve client in Node.js: embeds, upserts, searches with a filter, streams an
// upsert and handles an error status. The contract is loaded at runtime from the repository's .proto
// (no generated code; for TypeScript types, `buf generate` with buf.gen.yaml).
//
//   npm install && node client.js [--addr localhost:50051] [--token TOKEN] [--collection node_demo]
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const addr = arg("addr", process.env.ZEMBED_ADDRESS || "localhost:50051");
const token = arg("token", process.env.ZEMBED_TOKEN || "");
const collection = arg("collection", "node_demo");
const protoDir = arg("protos", path.join(__dirname, "..", "..", "protos"));

const def = protoLoader.loadSync("zembed/v1/zembed.proto", {
  includeDirs: [protoDir],
  keepCase: true, // field names as in the .proto (snake_case)
  longs: Number, // int64 counts as numbers
  enums: String,
  defaults: true,
  oneofs: true, // sets e.g. `kind: "string_value"` on oneofs
});
const v1 = grpc.loadPackageDefinition(def).zembed.v1;
const creds = grpc.credentials.createInsecure();
const embedding = new v1.EmbeddingService(addr, creds);
const search = new v1.SearchService(addr, creds);

function meta() {
  const m = new grpc.Metadata();
  if (token) m.set("authorization", `Bearer ${token}`);
  return m;
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30000);
    client[method](request, meta(), { deadline }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

const str = (s) => ({ string_value: s });

async function main() {
  // 1. Embed
  const emb = await call(embedding, "Embed", {
    inputs: ["hello world", "guten Tag"],
    input_type: "INPUT_TYPE_QUERY",
    encoding: "ENCODING_FLOAT_LIST",
  });
  console.log(`embed: ${emb.embeddings.length} vectors of ${emb.dimensions} dims, ${emb.usage.total_tokens} tokens`);

  // 2. A collection with a filterable field, then a unary Upsert
  try {
    await call(search, "CreateCollection", { name: collection, config: { filterable: ["lang"] } });
  } catch (err) {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
  }
  const up = await call(search, "Upsert", {
    collection,
    documents: [
      { id: "de-1", text: "Der Hund schläft.", metadata: { lang: str("de") } },
      { id: "en-1", text: "The dog sleeps.", metadata: { lang: str("en") } },
      { id: "fr-1", text: "Le chien dort.", metadata: { lang: str("fr") } },
    ],
  });
  console.log(`upsert: ${up.upserted} documents`);

  // 3. Streaming upsert (the bulk path): many documents per message; each message is acknowledged,
  //    in order, once durable, with one status per document
  const acked = await new Promise((resolve, reject) => {
    const stream = search.UpsertStream(meta());
    let n = 0;
    stream.on("data", (ack) => {
      ack.statuses.forEach((st, j) => {
        if (st.code !== 0) reject(new Error(`document ${j}: ${st.message}`));
      });
      n += ack.stored;
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(n));
    const documents = [];
    for (let i = 2; i <= 4; i++) {
      documents.push({
        id: `de-${i}`,
        text: `Ein deutscher Satz Nummer ${i}.`,
        // metadata keeps JSON types: numbers, null, lists of any values, objects
        metadata: {
          lang: str("de"),
          n: { int_value: i },
          tags: { list_value: { values: [str("x"), { null_value: "NULL_VALUE" }] } },
        },
      });
    }
    stream.write({ collection, documents });
    stream.end();
  });
  console.log(`stream: ${acked} acknowledged`);

  // 4. Search with a filter: only German documents
  const res = await call(search, "Search", {
    collection,
    text: "sleeping dog",
    top_k: 10,
    filter: [{ field: "lang", any_of: [str("de")] }],
  });
  for (const hit of res.hits) {
    const lang = hit.metadata.lang && hit.metadata.lang.string_value;
    if (lang !== "de") throw new Error(`filter broken: hit ${hit.id} has lang ${lang}`);
    console.log(`hit: ${hit.id} ${hit.score.toFixed(4)} lang=${lang}`);
  }
  console.log(`search: ${res.hits.length} hits, all lang=de`);

  // 5. An error status: searching a collection that does not exist
  try {
    await call(search, "Search", { collection: "no_such_collection", text: "x" });
    throw new Error("expected NOT_FOUND");
  } catch (err) {
    if (err.code !== grpc.status.NOT_FOUND) throw err;
    console.log(`error handled: NOT_FOUND: ${err.details}`);
  }
  console.log("node client: OK");
}

main()
  .catch((err) => {
    console.error(`node client failed: ${err.code !== undefined ? `code ${err.code}: ` : ""}${err.details || err.message}`);
    process.exitCode = 1;
  })
  .finally(() => {
    embedding.close();
    search.close();
  });
