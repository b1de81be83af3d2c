/* What the C kernels of transferlab share (data/tar/_tar.c, curate/_native.c): growable byte buffers, a list of
   indices for Python to finish, ASCII whitespace as Python's str.strip sees it, and the FNV-1a / SplitMix64
   hashing of keys and tokens. Included by each kernel module; everything here is static. */
#ifndef TRANSFERLAB_KERNELS_COMMON_H
#define TRANSFERLAB_KERNELS_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------- growable buffers ---------- */

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

static inline int reserve(Buffer *b, Py_ssize_t extra) {
    if (b->size + extra <= b->capacity)
        return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->size + extra)
        capacity *= 2;
    char *grown = PyMem_Realloc(b->data, capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static inline int append(Buffer *b, const void *bytes, Py_ssize_t n) {
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
    return 0;
}

static inline PyObject *to_bytes(Buffer *b) {
    PyObject *out = PyBytes_FromStringAndSize(b->data ? b->data : "", b->size);
    PyMem_Free(b->data);
    b->data = NULL;
    return out;
}

/* Append `index` to the list of the captions Python must finish; -1 with an exception set on failure. */
static inline int append_index(PyObject *list, Py_ssize_t index) {
    PyObject *number = PyLong_FromSsize_t(index);
    int failed = number == NULL || PyList_Append(list, number) < 0;
    Py_XDECREF(number);
    return failed ? -1 : 0;
}

static inline int is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* SplitMix64's finaliser (balance.mix64) */
static inline uint64_t spread(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

#endif
