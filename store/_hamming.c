/*
 * The _hamming extension: Python bindings of the Hamming scan kernels (csrc/scan_*.c, chosen at
 * import by csrc/dispatch.c), the rescoring dot products (csrc/rescore.c) and the shortlist gathers
 * (csrc/gather.c). The layout and top-k contract are described in csrc/scan.h.
 *
 * Kernel choice: the best one this CPU runs (avx512 > avx2 > popcnt > generic on x86, neon on ARM),
 * or the one named by ZEMBED_SCAN_KERNEL (an unknown or unsupported name fails the import with the
 * list of choices); scan_topk can also name a kernel per call (tests, benchmarks).
 * The GIL is released during scans, so threads scan in parallel (store/scan.py splits rows).
 */
#include <stdlib.h>

#include "csrc/pymod.h"

static const zs_kernel *DEFAULT = NULL;

PyObject *zs_py_check_rows(PyObject *self, PyObject *args);       /* csrc/bulk.c */
PyObject *zs_py_f16_norms_codes(PyObject *self, PyObject *args); /* csrc/bulk.c */
PyObject *zs_py_int_id_keys(PyObject *self, PyObject *args);     /* csrc/bulk.c */

/* scan_topk(queries, blocked_codes, n_rows, words, mask_or_None, base, heap_dist, heap_idx,
 *           heap_count, kernel=None) */
static PyObject *py_scan_topk(PyObject *self, PyObject *args) {
    PyObject *oq, *oc, *om, *ohd, *ohi, *ohc;
    const char *kname = NULL;
    int words;
    long long base;
    Py_ssize_t n_rows;
    if (!PyArg_ParseTuple(args, "OOniOLOOO|z", &oq, &oc, &n_rows, &words, &om, &base, &ohd, &ohi, &ohc, &kname))
        return NULL;
    if (words < 1 || words > ZS_MAX_WORDS) {
        PyErr_Format(PyExc_ValueError, "words must be in [1, %d]; given %d", ZS_MAX_WORDS, words);
        return NULL;
    }
    const zs_kernel *kern = DEFAULT;
    if (kname != NULL) {
        kern = zs_kernel_find(kname);
        if (kern == NULL || !zs_kernel_supported(kern)) {
            PyErr_Format(PyExc_ValueError, "scan kernel %R is %s on this CPU", PyTuple_GET_ITEM(args, 9),
                         kern == NULL ? "unknown" : "not supported");
            return NULL;
        }
    }
    Py_buffer bq, bc, bm, bhd, bhi, bhc;
    int have_mask = om != Py_None;
    if (get_buf(oq, &bq, 0, "queries") < 0) return NULL;
    if (get_buf(oc, &bc, 0, "codes") < 0) { PyBuffer_Release(&bq); return NULL; }
    if (have_mask && get_buf(om, &bm, 0, "mask") < 0) {
        PyBuffer_Release(&bq); PyBuffer_Release(&bc); return NULL;
    }
    if (get_buf(ohd, &bhd, 1, "heap_dist") < 0) goto fail3;
    if (get_buf(ohi, &bhi, 1, "heap_idx") < 0) goto fail4;
    if (get_buf(ohc, &bhc, 1, "heap_count") < 0) goto fail5;
    {
        Py_ssize_t row_bytes = (Py_ssize_t)words * 8;
        Py_ssize_t nq = bq.len / row_bytes, n = n_rows;
        Py_ssize_t k = nq ? bhd.len / (Py_ssize_t)sizeof(int32_t) / nq : 0;
        int ok = bq.len % row_bytes == 0 && n >= 0 && bc.len >= (n + 7) / 8 * 8 * row_bytes &&
                 nq > 0 && k > 0 &&
                 bhd.len == nq * k * (Py_ssize_t)sizeof(int32_t) &&
                 bhi.len == nq * k * (Py_ssize_t)sizeof(int64_t) &&
                 bhc.len == nq * (Py_ssize_t)sizeof(int32_t) && (!have_mask || bm.len >= n) &&
                 k <= INT32_MAX;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "scan_topk: inconsistent buffer sizes");
            goto fail6;
        }
        zs_heaps h = {(int32_t *)bhd.buf, (int64_t *)bhi.buf, (int32_t *)bhc.buf, (int)k};
        const uint8_t *mask = have_mask ? (const uint8_t *)bm.buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        kern->fn((const uint64_t *)bq.buf, nq, (const uint64_t *)bc.buf, n, words, mask, base, &h);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bhc); PyBuffer_Release(&bhi); PyBuffer_Release(&bhd);
    if (have_mask) PyBuffer_Release(&bm);
    PyBuffer_Release(&bc); PyBuffer_Release(&bq);
    Py_RETURN_NONE;
fail6: PyBuffer_Release(&bhc);
fail5: PyBuffer_Release(&bhi);
fail4: PyBuffer_Release(&bhd);
fail3:
    if (have_mask) PyBuffer_Release(&bm);
    PyBuffer_Release(&bc); PyBuffer_Release(&bq);
    return NULL;
}

static PyObject *py_kernel(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(DEFAULT->name); }

/* kernels() -> tuple of the kernel names this CPU runs, best first. */
static PyObject *py_kernels(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (int i = 0; i < zs_kernel_count(); i++) {
        const zs_kernel *k = zs_kernel_at(i);
        if (!zs_kernel_supported(k)) continue;
        PyObject *s = PyUnicode_FromString(k->name);
        if (s == NULL || PyList_Append(out, s) < 0) { Py_XDECREF(s); Py_DECREF(out); return NULL; }
        Py_DECREF(s);
    }
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
}

static PyMethodDef methods[] = {
    {"scan_topk", py_scan_topk, METH_VARARGS, "Running top-k Hamming scan (see csrc/scan.h)."},
    {"kernel", py_kernel, METH_NOARGS, "Name of the scan kernel in use (chosen for this CPU)."},
    {"kernels", py_kernels, METH_NOARGS, "Names of the scan kernels this CPU runs, best first."},
    {"scale_to_f16", zs_py_scale_to_f16, METH_VARARGS, "dst = float16(src * inv[row]) with F16C."},
    {"dot_f16", zs_py_dot_f16, METH_VARARGS, "out[i] = dot(float16 buffers[i], float32 query)."},
    {"gather_rows", zs_py_gather_rows, METH_VARARGS, "Row-major codes of positions in blocked chunks."},
    {"gather_i64", zs_py_gather_i64, METH_VARARGS, "int64 values of positions in chunked arrays."},
    {"check_rows", zs_py_check_rows, METH_VARARGS, "First float16/float32 row with a NaN, infinity or only zeros."},
    {"f16_norms_codes", zs_py_f16_norms_codes, METH_VARARGS, "float16 rows: inverse norms, checks, sign codes."},
    {"int_id_keys", zs_py_int_id_keys, METH_VARARGS, "int64 ids as decimal text, bare and prefixed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hamming",
                                    "Popcount Hamming scan kernels, rescoring dots and gathers.", -1, methods};

PyMODINIT_FUNC PyInit__hamming(void) {
    const char *force = getenv("ZEMBED_SCAN_KERNEL");
    if (force == NULL || force[0] == '\0' || strcmp(force, "auto") == 0) {
        DEFAULT = zs_kernel_best();
    } else {
        const zs_kernel *k = zs_kernel_find(force);
        if (k == NULL || !zs_kernel_supported(k)) {
            char names[256] = "";
            for (int i = 0; i < zs_kernel_count(); i++) {
                const zs_kernel *c = zs_kernel_at(i);
                if (!zs_kernel_supported(c)) continue;
                strncat(names, ", ", sizeof(names) - strlen(names) - 1);
                strncat(names, c->name, sizeof(names) - strlen(names) - 1);
            }
            PyErr_Format(PyExc_ImportError, "ZEMBED_SCAN_KERNEL=%s is %s on this CPU; choose one of: auto%s", force,
                         k == NULL ? "unknown" : "not supported", names);
            return NULL;
        }
        DEFAULT = k;
    }
    return PyModule_Create(&module);
}
