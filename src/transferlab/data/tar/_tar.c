/* Reading webdataset tar shards in C: an optional extension, built when a compiler is at hand.

Every function here has a pure-Python twin that gives the same result (data/tar/kernels.py holds them;
tests/curate/test_native.py and tests/data/test_pool_index.py check each pair on the same input); the Python
side falls back to the twin when this module is missing or when a function returns None ("not the plain case,
ask the careful reader").
The streaming index (data/stream/shard_scan.py) and curation's count stage read shards through them.

    plain_samples(data, text_exts, image_exts, key_state)
                                    layout.read_layout + group_samples, for a plain tar
    gather(data, offsets, width)    layout.header_blocks(...).tobytes()
    captions(data, where, limit)    text members stripped and joined by NUL (tar_kernels.joined_captions)
*/
#include "../../kernels_common.h"

#define BLOCK 512

/* ---------- plain_samples ---------- */

/* layout._octal for one field: digits after leading spaces or zeros; -1 for GNU's base-256 form */
static int64_t octal(const unsigned char *field, int width) {
    if (field[0] & 0x80)
        return -1;
    int64_t value = 0;
    for (int i = 0; i < width; i++) {
        unsigned char c = field[i];
        int digit = c >= '0' && c <= '7';
        if (digit)
            value = value * 8 + (c - '0');
        if (!(digit || (c == ' ' && value == 0)))
            break;
    }
    return value;
}

/* tarfile's check: the stored checksum equals the header's bytes summed, unsigned or signed, with the
   checksum field counted as spaces */
static int checksum_ok(const unsigned char *h) {
    if (h[148] & 0x80)
        return 0;
    uint32_t unsigned_sum = 8 * 32;  /* 512 bytes of at most 255 each: 32 bits hold the sums */
    int32_t signed_sum = 8 * 32;
    for (int i = 0; i < BLOCK; i++) {  /* the whole block (a loop the compiler vectorises), then the field out */
        unsigned_sum += h[i];
        signed_sum += (signed char)h[i];
    }
    for (int i = 148; i < 156; i++) {
        unsigned_sum -= h[i];
        signed_sum -= (signed char)h[i];
    }
    int64_t stored = octal(h + 148, 8);
    return stored == (int64_t)unsigned_sum || stored == (int64_t)signed_sum;
}

static int all_zero(const unsigned char *h) {
    if (h[0])  /* a header starts with its name */
        return 0;
    unsigned char any = 0;
    for (int i = 0; i < BLOCK; i++)
        any |= h[i];
    return !any;
}

#define MAX_TEXT_EXTS 8
#define FIXED_COLUMNS 6  /* start, end, key length, key hash, image offset, image size */

/* Whether `ext` (ASCII, `n` bytes), lower-cased, is one of `image_exts` (lower-case bytes objects). */
static int is_image(const char *ext, Py_ssize_t n, PyObject *image_exts) {
    char lowered[101];
    if (n > 100)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        lowered[i] = (ext[i] >= 'A' && ext[i] <= 'Z') ? ext[i] + 32 : ext[i];
    Py_ssize_t count = PyTuple_GET_SIZE(image_exts);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(image_exts, i);
        if (PyBytes_GET_SIZE(item) == n && memcmp(PyBytes_AS_STRING(item), lowered, n) == 0)
            return 1;
    }
    return 0;
}

/* Whether every item of the tuple `exts` is a bytes object; a TypeError naming `what` if not. */
static int all_bytes(PyObject *exts, const char *what) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(exts); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(exts, i))) {
            PyErr_Format(PyExc_TypeError, "%s must hold bytes", what);
            return 0;
        }
    return 1;
}

/* The samples of a plain tar: regular members only, names of ASCII bytes in one header (no long names, pax
   records, prefix field, folders), each 'key.ext' with a key, extensions not repeated within a sample, right
   checksums, end-of-archive blocks present. Returns the samples as bytes of 64-bit rows: start, end, key
   length, key hash, the first image member's offset and size (an extension of `image_exts`, lower-case bytes,
   matched lower-cased), then the offset and size of the member of each of `text_exts` (exact extensions, at
   most 8); -1 for a missing member. The key is the first key-length bytes of the header at start, its hash
   balance.key_hashes' FNV-1a continued from `key_state` then mixed. None for any other tar: the Python
   reader decides those. */
static PyObject *plain_samples(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *text_exts, *image_exts;
    unsigned long long key_state;
    if (!PyArg_ParseTuple(args, "y*O!O!K", &view, &PyTuple_Type, &text_exts, &PyTuple_Type, &image_exts,
                          &key_state))
        return NULL;
    Py_ssize_t texts = PyTuple_GET_SIZE(text_exts), width = FIXED_COLUMNS + 2 * texts;
    if (!all_bytes(image_exts, "image_exts") || !all_bytes(text_exts, "text_exts")) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (texts > MAX_TEXT_EXTS) {
        PyErr_SetString(PyExc_ValueError, "at most 8 text extensions");
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *data = view.buf;
    Py_ssize_t blocks = view.len / BLOCK, position = 0;
    Buffer table = {0};
    PyObject *result = NULL;
    int plain = 0;  /* set once the end-of-archive block is reached with every header plain */
    const char *key = NULL;  /* the open sample's key (points into data) */
    Py_ssize_t key_len = 0;
    char exts[64][101];  /* the open sample's extensions, to refuse a repeated one */
    Py_ssize_t ext_lens[64];
    int ext_count = 0;
    int64_t row[FIXED_COLUMNS + 2 * MAX_TEXT_EXTS];
    Py_ssize_t row_bytes = width * (Py_ssize_t)sizeof(int64_t);
    while (position < blocks) {
        const unsigned char *h = data + position * BLOCK;
        if (all_zero(h)) {
            plain = 1;
            break;
        }
        int64_t size = octal(h + 124, 12);
        unsigned char kind = h[156];
        if (size < 0 || !(kind == '0' || kind == 0 || kind == '7') || h[345] || !checksum_ok(h))
            break;
        int64_t end = (position + 1 + (size + BLOCK - 1) / BLOCK) * BLOCK;
        if (end > view.len)
            break;
        Py_ssize_t n = strnlen((const char *)h, 100), base = 0, dot = -1;
        int bad = n == 0 || h[0] == '/' || h[n - 1] == '/';
        unsigned char after = 0;  /* bytes after the name's NUL: the readers differ on those, ask the careful one */
        for (Py_ssize_t i = n; i < 100; i++)
            after |= h[i];
        bad = bad || after;
        for (Py_ssize_t i = 0; i < n && !bad; i++) {
            bad = h[i] >= 0x80 || (h[i] == '.' && i + 1 < n && h[i + 1] == '.');
            if (h[i] == '/')
                base = i + 1, dot = -1;
            else if (h[i] == '.' && dot < 0)
                dot = i;
        }
        if (bad || dot <= base || (n - dot - 1 >= 2 && h[dot + 1] == '_' && h[dot + 2] == '_'))
            break;
        const char *ext = (const char *)h + dot + 1;
        Py_ssize_t ext_len = n - dot - 1;
        if (key == NULL || key_len != dot || memcmp(key, h, dot) != 0) {  /* a new sample */
            if (key != NULL && append(&table, row, row_bytes) < 0)
                break;
            key = (const char *)h;
            key_len = dot;
            ext_count = 0;
            uint64_t hash = key_state;
            for (Py_ssize_t i = 0; i < dot; i++)
                hash = (hash ^ h[i]) * FNV_PRIME;
            row[0] = position * BLOCK, row[2] = dot, row[3] = (int64_t)spread(hash);
            for (Py_ssize_t i = 4; i < width; i++)
                row[i] = -1;
        }
        int repeated = ext_count == 64;
        for (int i = 0; i < ext_count && !repeated; i++)
            repeated = ext_lens[i] == ext_len && memcmp(exts[i], ext, ext_len) == 0;
        if (repeated)
            break;
        memcpy(exts[ext_count], ext, ext_len);
        ext_lens[ext_count++] = ext_len;
        row[1] = end;
        if (row[4] < 0 && is_image(ext, ext_len, image_exts))
            row[4] = (position + 1) * BLOCK, row[5] = size;
        for (Py_ssize_t t = 0; t < texts; t++) {
            PyObject *wanted = PyTuple_GET_ITEM(text_exts, t);
            int64_t *slot = row + FIXED_COLUMNS + 2 * t;
            if (slot[0] < 0 && PyBytes_GET_SIZE(wanted) == ext_len &&
                memcmp(PyBytes_AS_STRING(wanted), ext, ext_len) == 0)
                slot[0] = (position + 1) * BLOCK, slot[1] = size;
        }
        position = end / BLOCK;
    }
    if (PyErr_Occurred())
        goto done;
    if (!plain) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (key != NULL && append(&table, row, row_bytes) < 0)
        goto done;
    result = to_bytes(&table);
done:
    PyMem_Free(table.data);
    PyBuffer_Release(&view);
    return result;
}

/* ---------- gather ---------- */

/* The `width` bytes at each of `offsets` (bytes of int64, each at most len(data) - width), back to back:
   layout.header_blocks(data, offsets, width).tobytes() without numpy's row-by-row indexing. */
static PyObject *gather(PyObject *self, PyObject *args) {
    Py_buffer view, where;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*n", &view, &where, &width))
        return NULL;
    Py_ssize_t count = where.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *offsets = where.buf;
    PyObject *out = width < 0 ? NULL : PyBytes_FromStringAndSize(NULL, count * width);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        if (offsets[i] < 0 || offsets[i] > view.len - width) {
            Py_CLEAR(out);
            PyErr_Format(PyExc_IndexError, "offset %lld is out of the data's %zd bytes", (long long)offsets[i],
                         view.len);
            break;
        }
        memcpy(PyBytes_AS_STRING(out) + i * width, (const char *)view.buf + offsets[i], width);
    }
    if (width < 0)
        PyErr_SetString(PyExc_ValueError, "width must not be negative");
    PyBuffer_Release(&view);
    PyBuffer_Release(&where);
    return out;
}

/* ---------- captions ---------- */

/* The captions at `where` (bytes of int64 pairs: offset, size; offset -1: the sample has none, and is left
   out), stripped of ASCII whitespace and joined by NUL: count.read_captions' bytes before decoding. Returns
   (bytes, list): the list holds the indices (among the captions present) that Python must finish, those
   that may start or end with a Unicode space (a non-ASCII byte at either end) or may be too long (more
   than `limit` bytes); None when a caption holds a NUL (it could not be split again). */
static PyObject *captions(PyObject *self, PyObject *args) {
    Py_buffer view, where;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*y*n", &view, &where, &limit))
        return NULL;
    const int64_t *pairs = where.buf;
    Py_ssize_t count = where.len / (Py_ssize_t)(2 * sizeof(int64_t)), index = 0;
    Buffer out = {0};
    PyObject *flagged = PyList_New(0), *result = NULL;
    if (flagged == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t offset = pairs[2 * i], size = pairs[2 * i + 1];
        if (offset < 0)
            continue;
        if (size < 0 || offset > view.len - size) {
            PyErr_Format(PyExc_IndexError, "caption %zd lies outside the data", i);
            goto done;
        }
        const unsigned char *text = (const unsigned char *)view.buf + offset;
        if (memchr(text, 0, size) != NULL) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        while (size > 0 && is_space(text[0]))
            text++, size--;
        while (size > 0 && is_space(text[size - 1]))
            size--;
        if (size > 0 && (text[0] >= 0x80 || text[size - 1] >= 0x80 || size > limit) &&
            append_index(flagged, index) < 0)
            goto done;
        static const char nul = 0;
        if ((index > 0 && append(&out, &nul, 1) < 0) || append(&out, text, size) < 0)
            goto done;
        index++;
    }
    result = Py_BuildValue("(NO)", to_bytes(&out), flagged);
done:
    PyMem_Free(out.data);
    Py_XDECREF(flagged);
    PyBuffer_Release(&view);
    PyBuffer_Release(&where);
    return result;
}

static PyMethodDef methods[] = {
    {"plain_samples", plain_samples, METH_VARARGS, "The samples of a plain tar, or None (see the C source)."},
    {"gather", gather, METH_VARARGS, "The width bytes at each offset, back to back."},
    {"captions", captions, METH_VARARGS, "The captions at (offset, size) pairs, stripped and joined by NUL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tar", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tar(void) { return PyModule_Create(&module); }
