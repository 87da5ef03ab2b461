/* Shared by the Python-facing files of the _hamming extension. */
#ifndef ZEMBED_PYMOD_H
#define ZEMBED_PYMOD_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "scan.h"

static inline int get_buf(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    return 0;
}

#ifdef ZS_X86
#include <immintrin.h>
#endif

PyObject *zs_py_scale_to_f16(PyObject *self, PyObject *args); /* rescore.c */
PyObject *zs_py_dot_f16(PyObject *self, PyObject *args);      /* rescore.c */
PyObject *zs_py_gather_rows(PyObject *self, PyObject *args);  /* gather.c */
PyObject *zs_py_gather_i64(PyObject *self, PyObject *args);   /* gather.c */

#endif
