/* Curation's caption kernels in C: an optional extension, built when a compiler is at hand.

Every function here has a pure-Python twin that gives the same result (tests/curate/test_native.py checks
each pair on the same input); the Python side falls back to the twin when this module is missing. The tar
reading that curation shares with streaming is in data/tar/_tar.c.

    normalise_ascii(joined, lower)                metadata.normalise of each ASCII caption
    build_matcher(entries) / match(matcher, text) metadata.Matcher: entries found at token boundaries
*/
#include "../kernels_common.h"

/* ---------- normalise_ascii ---------- */

static const char PUNCTUATION[] = ",.;:!?\"'`()[]{}<>";

/* metadata.normalise of each caption of `joined` (captions separated by NUL): ' a cat . ', joined by NUL.
   A caption holding a non-ASCII byte is left empty and its index returned in the list: str.lower and
   str.split know Unicode's cases and spaces, which this does not. Returns (bytes, list). */
static PyObject *normalise_ascii(PyObject *self, PyObject *args) {
    Py_buffer view;
    int lower;
    if (!PyArg_ParseTuple(args, "y*p", &view, &lower))
        return NULL;
    const unsigned char *text = view.buf;
    Buffer out = {0};
    PyObject *flagged = PyList_New(0), *result = NULL;
    Py_ssize_t start = 0, index = 0;
    if (flagged == NULL)
        goto done;
    while (start <= view.len) {
        const unsigned char *end = memchr(text + start, 0, view.len - start);
        Py_ssize_t stop = end ? end - text : view.len, mark = out.size;
        if (reserve(&out, 2 * (stop - start) + 4) < 0)  /* a byte grows to at most " p"; the padding and NUL */
            goto done;
        char *w = out.data + out.size;
        int ascii = 1, gap = 1;  /* gap: the last byte written is a space */
        *w++ = ' ';
        for (Py_ssize_t i = start; i < stop && ascii; i++) {
            unsigned char c = text[i];
            if (c >= 0x80) {
                ascii = 0;
            } else if (is_space(c)) {
                if (!gap)
                    *w++ = ' ', gap = 1;
            } else if (strchr(PUNCTUATION, c) != NULL) {  /* c is never NUL here: NUL ends a caption */
                if (!gap)
                    *w++ = ' ';
                *w++ = (char)c, *w++ = ' ', gap = 1;
            } else {
                *w++ = (char)(lower && c >= 'A' && c <= 'Z' ? c + 32 : c), gap = 0;
            }
        }
        if (w == out.data + mark + 1)
            *w++ = ' ';  /* no token: '  ', as ' ' + '' + ' ' */
        else if (!gap)
            *w++ = ' ';
        if (ascii) {
            out.size = w - out.data;
        } else {
            out.size = mark;
            if (append_index(flagged, index) < 0)
                goto done;
        }
        if (end == NULL)
            break;
        out.data[out.size++] = 0;
        start = stop + 1;
        index++;
    }
    result = Py_BuildValue("(NO)", to_bytes(&out), flagged);
done:
    PyMem_Free(out.data);
    Py_XDECREF(flagged);
    PyBuffer_Release(&view);
    return result;
}

/* ---------- the token matcher ---------- */

/* A normalised entry ' t1 t2 ... tk ' occurs in a normalised caption ' c1 c2 ... cn ' exactly when its
   tokens are a run of the caption's tokens (both single-spaced, tokens free of spaces). The table holds a
   hash of every entry's token prefixes ' t1 ... tj ' (FNV-1a over the bytes): a scan starting at each
   token of the caption extends token by token while the prefix so far is one of some entry's, and a full
   entry found by hash is confirmed byte for byte, so a hash collision can cost time but never a match.
   A bit per 2^20 hash values (128 KiB, kept in the core's cache) answers most lookups of tokens that start
   no entry before the table (MiBs, in memory) is read. */

typedef struct {
    uint32_t tag;    /* more bits of the prefix's hash than the slot's position gives */
    uint32_t value;  /* (entry + 1) << 1 for an entry's whole text, | 1 when a longer entry starts with it; 0: free */
    uint32_t at, length;  /* where the entry's text lies (beside the slot: one fetch from memory, not two) */
} Slot;

#define FILTER_BITS 20

typedef struct {
    Slot *slots;
    uint64_t mask;
    uint64_t *filter;    /* 2^FILTER_BITS bits */
    char *text;          /* the entries, back to back */
} Matcher;

/* Record a prefix (entry < 0) or an entry's whole text (text[at:at + length]) under its hash. */
static void insert(Matcher *m, uint64_t hash, int32_t entry, uint32_t at, uint32_t length) {
    uint64_t mixed = spread(hash), i = mixed & m->mask;
    uint32_t tag = (uint32_t)(mixed >> 32), bit = (uint32_t)(mixed >> (64 - FILTER_BITS));
    m->filter[bit >> 6] |= 1ULL << (bit & 63);
    for (; m->slots[i].value; i = (i + 1) & m->mask) {
        Slot *s = &m->slots[i];
        if (s->tag != tag)
            continue;
        if (entry < 0) {  /* a prefix: one slot of this tag saying so is enough */
            s->value |= 1;
            return;
        }
        if (s->value >> 1 == 0) {
            s->value |= (uint32_t)(entry + 1) << 1;
            s->at = at, s->length = length;
            return;
        }
    }
    m->slots[i] = (Slot){tag, entry < 0 ? 1 : (uint32_t)(entry + 1) << 1, at, length};
}

static void free_matcher(PyObject *capsule) {
    Matcher *m = PyCapsule_GetPointer(capsule, "transferlab.matcher");
    if (m == NULL)
        return;
    PyMem_Free(m->slots);
    PyMem_Free(m->filter);
    PyMem_Free(m->text);
    PyMem_Free(m);
}

static void *drop_matcher(Matcher *m) {
    PyMem_Free(m->slots), PyMem_Free(m->filter), PyMem_Free(m->text), PyMem_Free(m);
    return NULL;
}

/* A matcher of the normalised entries (a list of str), or None when one is not single-spaced tokens between
   a leading and a trailing space, or holds a NUL (the Aho-Corasick matcher takes those). */
static PyObject *build_matcher(PyObject *self, PyObject *args) {
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(list), total = 0, prefixes = 0;
    if (count >= INT32_MAX / 2)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n;
        PyObject *item = PyList_GET_ITEM(list, i);
        const char *s = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &n) : NULL;
        if (s == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "entries must be str");
            return NULL;
        }
        if (n < 3 || s[0] != ' ' || s[1] == ' ' || s[n - 1] != ' ' || memchr(s, 0, n) != NULL)
            Py_RETURN_NONE;
        for (Py_ssize_t j = 1; j < n; j++)
            if (s[j] == ' ') {
                if (s[j - 1] == ' ')
                    Py_RETURN_NONE;
                prefixes++;
            }
        total += n;
    }
    if (total >= UINT32_MAX)
        Py_RETURN_NONE;
    Matcher *m = PyMem_Calloc(1, sizeof(Matcher));
    if (m == NULL)
        return PyErr_NoMemory();
    uint64_t size = 16;
    while (size < 2 * (uint64_t)prefixes + 16)
        size *= 2;
    m->mask = size - 1;
    m->slots = PyMem_Calloc(size, sizeof(Slot));
    m->filter = PyMem_Calloc((1 << FILTER_BITS) / 64, sizeof(uint64_t));
    m->text = PyMem_Malloc(total + 1);
    if (m->slots == NULL || m->filter == NULL || m->text == NULL)
        return drop_matcher(m), PyErr_NoMemory();
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(list, i), &n);
        memcpy(m->text + at, s, n);
        uint64_t hash = FNV_OFFSET;
        for (Py_ssize_t j = 0; j < n; j++) {
            hash = (hash ^ (unsigned char)s[j]) * FNV_PRIME;
            if (s[j] == ' ' && j > 0)
                insert(m, hash, j == n - 1 ? (int32_t)i : -1, (uint32_t)at, (uint32_t)n);
        }
        at += n;
    }
    PyObject *capsule = PyCapsule_New(m, "transferlab.matcher", free_matcher);
    return capsule == NULL ? drop_matcher(m) : capsule;
}

/* Look text[start..end] (' t1 ... tj ', `hash` its FNV-1a) up: add the entry it is to `ids`; return
   whether a longer entry may start with it (-1 when out of memory). */
static int look_up(Matcher *m, uint64_t hash, const char *text, Py_ssize_t start, Py_ssize_t end, Buffer *ids) {
    uint64_t mixed = spread(hash);
    uint32_t bit = (uint32_t)(mixed >> (64 - FILTER_BITS)), tag = (uint32_t)(mixed >> 32);
    if (!(m->filter[bit >> 6] >> (bit & 63) & 1))
        return 0;
    int continues = 0;
    for (uint64_t k = mixed & m->mask; m->slots[k].value; k = (k + 1) & m->mask) {
        Slot *slot = &m->slots[k];
        if (slot->tag != tag)
            continue;
        continues |= slot->value & 1;
        int32_t entry = (int32_t)(slot->value >> 1) - 1;
        if (entry >= 0) {
            int64_t n = slot->length;
            if (n == end - start + 1 && memcmp(m->text + slot->at, text + start, n) == 0 &&
                append(ids, &entry, sizeof entry) < 0)
                return -1;
        }
    }
    return continues;
}

/* Sort a caption's few entry ids and drop repeats; returns how many are left. */
static Py_ssize_t sort_unique(int32_t *ids, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {  /* insertion sort: a caption matches a handful */
        int32_t value = ids[i];
        Py_ssize_t j = i;
        for (; j > 0 && ids[j - 1] > value; j--)
            ids[j] = ids[j - 1];
        ids[j] = value;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (kept == 0 || ids[i] != ids[kept - 1])
            ids[kept++] = ids[i];
    return kept;
}

/* The entries found in each caption of `text` (normalised captions joined by NUL, a str): (ptr, ids) as
   bytes of int64 and int32, caption i matched ids[ptr[i]:ptr[i + 1]], each once, ascending. */
/* From the prefix text[s..e] (its first token, `hash` its FNV-1a), look up it and each longer run of tokens
   while some entry starts with it; the entries found go to `ids`. -1 when out of memory. */
static int extend(Matcher *m, const char *text, Py_ssize_t s, Py_ssize_t e, Py_ssize_t stop, uint64_t hash,
                  Buffer *ids) {
    for (;;) {
        int continues = look_up(m, hash, text, s, e, ids);
        if (continues <= 0)
            return continues;
        do {  /* the next token, up to and with its closing space */
            if (++e >= stop)
                return 0;
            hash = (hash ^ (unsigned char)text[e]) * FNV_PRIME;
        } while (text[e] != ' ');
    }
}

#define AHEAD 32  /* first tokens hashed, and their table slots fetched, before any is looked up */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

/* The entries found in each caption of `text` (normalised captions joined by NUL, a str): (ptr, ids) as
   bytes of int64 and int32, caption i matched ids[ptr[i]:ptr[i + 1]], each once, ascending. The scans
   start from AHEAD tokens at a time, whose slots are requested from memory together: most lookups of a
   token that starts an entry miss the caches, and the misses then overlap instead of queueing. */
static PyObject *match(PyObject *self, PyObject *args) {
    PyObject *capsule, *joined;
    if (!PyArg_ParseTuple(args, "OU", &capsule, &joined))
        return NULL;
    Matcher *m = PyCapsule_GetPointer(capsule, "transferlab.matcher");
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(joined, &len);
    if (m == NULL || text == NULL)
        return NULL;
    Buffer ptr = {0}, ids = {0};
    int64_t zero = 0;
    int failed = append(&ptr, &zero, sizeof zero) < 0;
    Py_ssize_t starts[AHEAD], ends[AHEAD];
    uint64_t hashes[AHEAD];
    for (Py_ssize_t start = 0; start <= len && !failed;) {  /* a caption: text[start:stop] */
        const char *nul = memchr(text + start, 0, len - start);
        Py_ssize_t stop = nul ? nul - text : len, first = ids.size, s = start;
        while (s < stop && text[s] != ' ')
            s++;
        while (s + 1 < stop && !failed) {  /* text[s] is a space: the first tokens from here */
            int n = 0;
            while (n < AHEAD && s + 1 < stop) {
                uint64_t hash = (FNV_OFFSET ^ (unsigned char)' ') * FNV_PRIME;
                Py_ssize_t e = s + 1;
                for (; e < stop; e++) {
                    hash = (hash ^ (unsigned char)text[e]) * FNV_PRIME;
                    if (text[e] == ' ')
                        break;
                }
                if (e == stop)
                    break;  /* no closing space: no token */
                uint64_t mixed = spread(hash);
                uint32_t bit = (uint32_t)(mixed >> (64 - FILTER_BITS));
                if (m->filter[bit >> 6] >> (bit & 63) & 1) {
                    PREFETCH(&m->slots[mixed & m->mask]);
                    starts[n] = s, ends[n] = e, hashes[n++] = hash;
                }
                s = e;
            }
            for (int i = 0; i < n && !failed; i++)
                failed = extend(m, text, starts[i], ends[i], stop, hashes[i], &ids) < 0;
            if (n < AHEAD)
                break;
        }
        Py_ssize_t n = sort_unique((int32_t *)(ids.data + first), (ids.size - first) / (Py_ssize_t)sizeof(int32_t));
        ids.size = first + n * (Py_ssize_t)sizeof(int32_t);
        int64_t end = ids.size / (Py_ssize_t)sizeof(int32_t);
        failed = failed || append(&ptr, &end, sizeof end) < 0;
        start = stop + 1;
    }
    if (failed) {
        PyMem_Free(ptr.data), PyMem_Free(ids.data);
        return NULL;  /* append set MemoryError */
    }
    return Py_BuildValue("(NN)", to_bytes(&ptr), to_bytes(&ids));
}

static PyMethodDef methods[] = {
    {"normalise_ascii", normalise_ascii, METH_VARARGS, "metadata.normalise of each ASCII caption."},
    {"build_matcher", build_matcher, METH_VARARGS, "A token matcher of normalised entries, or None."},
    {"match", match, METH_VARARGS, "The entries found in each caption of a NUL-joined normalised text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
