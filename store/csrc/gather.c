/* Gathers: rows of a shortlist out of chunked arrays (codes in the scan's blocked layout, row ids). */
#include "pymod.h"

/* Shared by gather_rows and gather_i64: out[i] = the row at positions[i] of chunked arrays
 * (chunk = position >> shift). Blocked chunks hold 8 rows per block, word-interleaved (the scan's
 * layout); flat chunks hold rows one after another. Rows are `words` uint64 wide. */
static PyObject *gather(PyObject *ochunks, PyObject *opos, int shift, int words, PyObject *oout, int blocked,
                        const char *name) {
    PyObject *fast = PySequence_Fast(ochunks, "chunks must be a sequence");
    if (fast == NULL) return NULL;
    Py_ssize_t nchunks = PySequence_Fast_GET_SIZE(fast);
    Py_buffer bp, bo;
    if (get_buf(opos, &bp, 0, "positions") < 0) { Py_DECREF(fast); return NULL; }
    if (get_buf(oout, &bo, 1, "out") < 0) { PyBuffer_Release(&bp); Py_DECREF(fast); return NULL; }
    Py_ssize_t n = bp.len / 8;
    Py_buffer *bufs = (Py_buffer *)PyMem_Calloc((size_t)(nchunks ? nchunks : 1), sizeof(Py_buffer));
    Py_ssize_t got = 0;
    int ok = bufs != NULL && bo.len == n * words * 8;
    for (; ok && got < nchunks; got++)
        if (get_buf(PySequence_Fast_GET_ITEM(fast, got), &bufs[got], 0, "chunks[i]") < 0) ok = 0;
    if (ok) {
        const int64_t *pos = (const int64_t *)bp.buf;
        uint64_t *out = (uint64_t *)bo.buf;
        int64_t mask = ((int64_t)1 << shift) - 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t c = pos[i] >> shift, lane = pos[i] & mask;
            Py_ssize_t end = blocked ? (lane / 8 + 1) * words * 64 : (lane + 1) * words * 8;
            if (pos[i] < 0 || c >= nchunks || end > bufs[c].len) {
                PyErr_Format(PyExc_IndexError, "%s: position %lld out of range", name, (long long)pos[i]);
                ok = 0;
                break;
            }
            const uint64_t *chunk = (const uint64_t *)bufs[c].buf;
            if (blocked) {
                const uint64_t *blk = chunk + (lane >> 3) * words * 8;
                for (int w = 0; w < words; w++) out[i * words + w] = blk[w * 8 + (lane & 7)];
            } else {
                for (int w = 0; w < words; w++) out[i * words + w] = chunk[lane * words + w];
            }
        }
    } else if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s: inconsistent buffer sizes", name);
    }
    for (Py_ssize_t j = 0; j < got; j++)
        if (bufs[j].obj != NULL) PyBuffer_Release(&bufs[j]);
    PyMem_Free(bufs);
    PyBuffer_Release(&bo); PyBuffer_Release(&bp); Py_DECREF(fast);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* gather_rows(chunks, positions_i64, shift, words, out_u64): row-major codes of the given positions
 * from blocked chunks (chunk = position >> shift); out is [len(positions), words]. */
PyObject *zs_py_gather_rows(PyObject *self, PyObject *args) {
    PyObject *ochunks, *opos, *oout;
    int shift, words;
    if (!PyArg_ParseTuple(args, "OOiiO", &ochunks, &opos, &shift, &words, &oout)) return NULL;
    if (words < 1 || words > ZS_MAX_WORDS || shift < 3 || shift > 40) {
        PyErr_SetString(PyExc_ValueError, "gather_rows: bad words or shift");
        return NULL;
    }
    return gather(ochunks, opos, shift, words, oout, 1, "gather_rows");
}

/* gather_i64(chunks, positions_i64, shift, out_i64): out[i] = chunks[p >> shift][p & mask] for
 * int64 chunk arrays (row ids of a shortlist: independent loads, so the misses overlap). */
PyObject *zs_py_gather_i64(PyObject *self, PyObject *args) {
    PyObject *ochunks, *opos, *oout;
    int shift;
    if (!PyArg_ParseTuple(args, "OOiO", &ochunks, &opos, &shift, &oout)) return NULL;
    if (shift < 0 || shift > 40) {
        PyErr_SetString(PyExc_ValueError, "gather_i64: bad shift");
        return NULL;
    }
    return gather(ochunks, opos, shift, 1, oout, 0, "gather_i64");
}
