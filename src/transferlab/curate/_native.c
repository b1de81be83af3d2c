/* The count stage's per-sample work in C: an optional extension, built when a compiler is at hand.

Every function here has a pure-Python twin that gives the same result (tests/curate/test_native.py checks
each pair on the same input); the Python side falls back to the twin when this module is missing or when
a function returns None ("not the plain case, ask the careful reader").

    plain_samples(data, caption_ext, image_exts, key_state)
                                                  tar_layout.read_layout + group_samples, for a plain tar
    gather(data, offsets, width)                  tar_layout.header_blocks(...).tobytes()
    captions(data, where, limit)                  count.read_captions' joined captions, stripped
    normalise_ascii(joined, lower)                metadata.normalise of each ASCII caption
    build_matcher(entries) / match(matcher, text) metadata.Matcher: entries found at token boundaries
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 512

/* ---------- growable buffers ---------- */

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

static int reserve(Buffer *b, Py_ssize_t extra) {
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

static int append(Buffer *b, const void *bytes, Py_ssize_t n) {
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
    return 0;
}

static PyObject *to_bytes(Buffer *b) {
    PyObject *out = PyBytes_FromStringAndSize(b->data ? b->data : "", b->size);
    PyMem_Free(b->data);
    b->data = NULL;
    return out;
}

/* ---------- plain_samples ---------- */

/* tar_layout._octal for one field: digits after leading spaces or zeros; -1 for GNU's base-256 form */
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

typedef struct {
    int64_t start, end, key_length;
    uint64_t key_hash;
    int64_t caption_offset, caption_size, image_offset, image_size;
} Sample;

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* SplitMix64's finaliser (balance.mix64) */
static uint64_t spread(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

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

/* The samples of a plain tar: regular members only, names of ASCII bytes in one header (no long names, pax
   records, prefix field, folders), each 'key.ext' with a key, extensions not repeated within a sample, right
   checksums, end-of-archive blocks present. Returns the samples as bytes of 64-bit rows (start, end, key
   length, key hash, caption offset, caption size, image offset, image size; -1 for a missing member; the
   key is the first key-length bytes of the header at start, its hash balance.key_hashes' FNV-1a continued
   from `key_state` then mixed), or None for any other tar: the Python reader decides those. */
static PyObject *plain_samples(PyObject *self, PyObject *args) {
    Py_buffer view;
    const char *caption_ext;
    Py_ssize_t caption_len;
    PyObject *image_exts;
    unsigned long long key_state;
    if (!PyArg_ParseTuple(args, "y*y#O!K", &view, &caption_ext, &caption_len, &PyTuple_Type, &image_exts,
                          &key_state))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(image_exts); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(image_exts, i))) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "image_exts must hold bytes");
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
    Sample sample;
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
            if (key != NULL && append(&table, &sample, sizeof sample) < 0)
                break;
            key = (const char *)h;
            key_len = dot;
            ext_count = 0;
            uint64_t hash = key_state;
            for (Py_ssize_t i = 0; i < dot; i++)
                hash = (hash ^ h[i]) * FNV_PRIME;
            sample = (Sample){position * BLOCK, end, dot, spread(hash), -1, -1, -1, -1};
        }
        int repeated = ext_count == 64;
        for (int i = 0; i < ext_count && !repeated; i++)
            repeated = ext_lens[i] == ext_len && memcmp(exts[i], ext, ext_len) == 0;
        if (repeated)
            break;
        memcpy(exts[ext_count], ext, ext_len);
        ext_lens[ext_count++] = ext_len;
        sample.end = end;
        if (sample.caption_offset < 0 && ext_len == caption_len && memcmp(ext, caption_ext, ext_len) == 0)
            sample.caption_offset = (position + 1) * BLOCK, sample.caption_size = size;
        if (sample.image_offset < 0 && is_image(ext, ext_len, image_exts))
            sample.image_offset = (position + 1) * BLOCK, sample.image_size = size;
        position = end / BLOCK;
    }
    if (PyErr_Occurred())
        goto done;
    if (!plain) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (key != NULL && append(&table, &sample, sizeof sample) < 0)
        goto done;
    result = to_bytes(&table);
done:
    PyMem_Free(table.data);
    PyBuffer_Release(&view);
    return result;
}

/* ---------- gather ---------- */

/* The `width` bytes at each of `offsets` (bytes of int64, each at most len(data) - width), back to back:
   tar_layout.header_blocks(data, offsets, width).tobytes() without numpy's row-by-row indexing. */
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

/* Append `index` to the list of the captions Python must finish; -1 with an exception set on failure. */
static int append_index(PyObject *list, Py_ssize_t index) {
    PyObject *number = PyLong_FromSsize_t(index);
    int failed = number == NULL || PyList_Append(list, number) < 0;
    Py_XDECREF(number);
    return failed ? -1 : 0;
}

static int is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }

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
    {"plain_samples", plain_samples, METH_VARARGS, "The samples of a plain tar, or None (see the C source)."},
    {"gather", gather, METH_VARARGS, "The width bytes at each offset, back to back."},
    {"captions", captions, METH_VARARGS, "The captions at (offset, size) pairs, stripped and joined by NUL."},
    {"normalise_ascii", normalise_ascii, METH_VARARGS, "metadata.normalise of each ASCII caption."},
    {"build_matcher", build_matcher, METH_VARARGS, "A token matcher of normalised entries, or None."},
    {"match", match, METH_VARARGS, "The entries found in each caption of a NUL-joined normalised text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
