// An example zembed-serve client in Go: embeds, upserts, searches with a filter, streams an upsert
// and handles an error status. Generated code: `buf generate` (buf.gen.yaml at the repository root)
// or `protoc --go_out --go-grpc_out` into gen/go (package github.com/zembed/zembed-serve/gen/go/zembed/v1).
//
//	go run . -addr localhost:50051 [-token TOKEN] [-collection go_demo]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	zembedv1 "github.com/zembed/zembed-serve/gen/go/zembed/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func str(s string) *zembedv1.MetadataValue {
	return &zembedv1.MetadataValue{Kind: &zembedv1.MetadataValue_StringValue{StringValue: s}}
}

func main() {
	addr := flag.String("addr", "localhost:50051", "server address")
	token := flag.String("token", os.Getenv("ZEMBED_TOKEN"), "bearer token (default $ZEMBED_TOKEN)")
	name := flag.String("collection", "go_demo", "collection to create and fill")
	flag.Parse()

	conn, err := grpc.Dial(*addr, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(10*time.Second))
	if err != nil {
		log.Fatalf("connect %s: %v", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	emb := zembedv1.NewEmbeddingServiceClient(conn)
	search := zembedv1.NewSearchServiceClient(conn)

	// 1. Embed
	er, err := emb.Embed(ctx, &zembedv1.EmbedRequest{
		Inputs:    []string{"hello world", "guten Tag"},
		InputType: zembedv1.InputType_INPUT_TYPE_QUERY,
		Encoding:  zembedv1.Encoding_ENCODING_FLOAT_LIST,
	})
	if err != nil {
		log.Fatalf("Embed: %v", err)
	}
	fmt.Printf("embed: %d vectors of %d dims, %d tokens\n", len(er.Embeddings), er.Dimensions, er.Usage.TotalTokens)

	// 2. A collection with a filterable field, then a unary Upsert
	if _, err := search.CreateCollection(ctx, &zembedv1.CreateCollectionRequest{
		Name: *name, Config: &zembedv1.CollectionConfig{Filterable: []string{"lang"}},
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		log.Fatalf("CreateCollection: %v", err)
	}
	docs := []*zembedv1.Document{
		{Id: "de-1", Content: &zembedv1.Document_Text{Text: "Der Hund schläft."}, Metadata: map[string]*zembedv1.MetadataValue{"lang": str("de")}},
		{Id: "en-1", Content: &zembedv1.Document_Text{Text: "The dog sleeps."}, Metadata: map[string]*zembedv1.MetadataValue{"lang": str("en")}},
		{Id: "fr-1", Content: &zembedv1.Document_Text{Text: "Le chien dort."}, Metadata: map[string]*zembedv1.MetadataValue{"lang": str("fr")}},
	}
	ur, err := search.Upsert(ctx, &zembedv1.UpsertRequest{Collection: *name, Documents: docs})
	if err != nil {
		log.Fatalf("Upsert: %v", err)
	}
	fmt.Printf("upsert: %d documents\n", ur.Upserted)

	// 3. Streaming upsert (the bulk path): many documents per message; each message is acknowledged,
	//    in order, once durable, with one status per document
	stream, err := search.UpsertStream(ctx)
	if err != nil {
		log.Fatalf("UpsertStream: %v", err)
	}
	var batch []*zembedv1.Document
	for i := 2; i <= 4; i++ {
		batch = append(batch, &zembedv1.Document{
			Id:      fmt.Sprintf("de-%d", i),
			Content: &zembedv1.Document_Text{Text: fmt.Sprintf("Ein deutscher Satz Nummer %d.", i)},
			// metadata keeps JSON types: numbers, null, lists of any values, objects
			Metadata: map[string]*zembedv1.MetadataValue{
				"lang": str("de"),
				"n":    {Kind: &zembedv1.MetadataValue_IntValue{IntValue: int64(i)}},
				"tags": {Kind: &zembedv1.MetadataValue_ListValue{ListValue: &zembedv1.MetadataList{
					Values: []*zembedv1.MetadataValue{
						str("x"),
						{Kind: &zembedv1.MetadataValue_NullValue{NullValue: structpb.NullValue_NULL_VALUE}},
					},
				}}},
			},
		})
	}
	if err := stream.Send(&zembedv1.UpsertStreamRequest{Collection: *name, Documents: batch}); err != nil {
		log.Fatalf("UpsertStream send: %v", err)
	}
	if err := stream.CloseSend(); err != nil {
		log.Fatalf("UpsertStream close: %v", err)
	}
	acked := 0
	for {
		ack, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatalf("UpsertStream recv: %v", err)
		}
		for j, st := range ack.Statuses {
			if st.GetCode() != 0 {
				log.Fatalf("UpsertStream document %d: %s", j, st.GetMessage())
			}
		}
		acked += int(ack.Stored)
	}
	fmt.Printf("stream: %d acknowledged\n", acked)

	// 4. Search with a filter: only German documents
	topK := int32(10)
	sr, err := search.Search(ctx, &zembedv1.SearchRequest{
		Collection: *name,
		Query:      &zembedv1.SearchRequest_Text{Text: "sleeping dog"},
		TopK:       &topK,
		Filter:     []*zembedv1.Condition{{Field: "lang", AnyOf: []*zembedv1.MetadataValue{str("de")}}},
	})
	if err != nil {
		log.Fatalf("Search: %v", err)
	}
	for _, h := range sr.Hits {
		lang := h.Metadata["lang"].GetStringValue()
		if lang != "de" {
			log.Fatalf("filter broken: hit %s has lang %q", h.Id, lang)
		}
		fmt.Printf("hit: %s %.4f lang=%s\n", h.Id, h.Score, lang)
	}
	fmt.Printf("search: %d hits, all lang=de\n", len(sr.Hits))

	// 5. An error status: searching a collection that does not exist
	_, err = search.Search(ctx, &zembedv1.SearchRequest{
		Collection: "no_such_collection", Query: &zembedv1.SearchRequest_Text{Text: "x"},
	})
	st, _ := status.FromError(err)
	if st.Code() != codes.NotFound {
		log.Fatalf("expected NOT_FOUND, got %v", err)
	}
	fmt.Printf("error handled: %s: %s\n", st.Code(), st.Message())
	fmt.Println("go client: OK")
}
