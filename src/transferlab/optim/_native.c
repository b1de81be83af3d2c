/* The 8-bit optimizers' step on the CPU in one pass: an optional extension, built when a compiler is at hand.

For each block of 256 values it dequantises the moments, updates them and the parameter in float32, and
re-quantises the moments with the block's new absmax, without a temporary tensor: one read and one write
of the parameter, the gradient and the 8-bit codes. Its pure-torch twin is the rest of eightbit.py and
quantize.py (the CUDA path and the fallback); tests/optim/test_native.py checks the two agree. The codes
are found with quantize.py's lookup tables (a float's top 17 bits name a bucket; one comparison with the
next boundary finishes), and the stochastic-rounding noise bytes come from the caller, drawn by the same
torch generators as the twin's, so both paths round the same values the same way.

    adamw(param, grad, moment, rms, n, first, last, lr, beta1, beta2, eps, decay, t)
    lion(param, grad, moment, n, first, last, lr, beta1, beta2, decay)

`param` and `grad` are addresses of n contiguous float32 values; `moment` and `rms` are tuples
(codes, absmax, noise, codebook) with codes uint8[n], absmax float32[blocks] and noise uint8[n] or 0 for
round-to-nearest; a codebook is (code float32[256], values table int32, values next float32[257],
midpoints table int32, midpoints next float32[256]) from quantize.py. Blocks first .. last - 1 are
updated (the caller may split a tensor's blocks among threads); the GIL is released meanwhile.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 256
#define SHIFT 15

typedef struct {
    const float *code;
    const int32_t *table[2]; /* [0]: the code's midpoints (nearest), [1]: its values (stochastic) */
    const float *next[2];
} Codebook;

typedef struct {
    uint8_t *codes;
    float *absmax;
    const uint8_t *noise;
    Codebook book;
} Moment;

static int parse_moment(PyObject *tuple, Moment *m) {
    unsigned long long codes, absmax, noise, code, mid_table, mid_next, val_table, val_next;
    if (!PyArg_ParseTuple(tuple, "KKK(KKKKK)", &codes, &absmax, &noise, &code, &val_table, &val_next, &mid_table,
                          &mid_next))
        return -1;
    m->codes = (uint8_t *)(uintptr_t)codes;
    m->absmax = (float *)(uintptr_t)absmax;
    m->noise = (const uint8_t *)(uintptr_t)noise;
    m->book.code = (const float *)(uintptr_t)code;
    m->book.table[0] = (const int32_t *)(uintptr_t)mid_table;
    m->book.next[0] = (const float *)(uintptr_t)mid_next;
    m->book.table[1] = (const int32_t *)(uintptr_t)val_table;
    m->book.next[1] = (const float *)(uintptr_t)val_next;
    return 0;
}

/* quantize.py's _TableSearch: how many boundaries are <= x (x holds no -0.0) */
static inline int32_t count_at_or_below(const Codebook *b, int kind, float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t count = b->table[kind][bits >> SHIFT];
    return count + (x >= b->next[kind][count]);
}

/* quantize_blockwise for one block held in float32 `values`: its absmax is `amax` */
static void quantize_block(const float *values, int size, float amax, Moment *m, int64_t offset, int64_t block) {
    const Codebook *b = &m->book;
    float scale = amax > 0.0f ? amax : 1.0f;
    m->absmax[block] = amax;
    for (int i = 0; i < size; i++) {
        float x = values[i] / scale + 0.0f; /* + 0.0: -0.0 becomes +0.0, as in the twin */
        if (m->noise == NULL) {
            m->codes[offset + i] = (uint8_t)count_at_or_below(b, 0, x);
            continue;
        }
        int32_t lower = count_at_or_below(b, 1, x) - 1;
        lower = lower < 0 ? 0 : lower > 254 ? 254 : lower;
        float low = b->code[lower];
        float gap = b->code[lower + 1] - low;
        float threshold = gap * (((float)m->noise[offset + i] + 0.5f) / 256.0f);
        m->codes[offset + i] = (uint8_t)(lower + ((x - low) > threshold));
    }
}

static inline float dequantized(const Moment *m, int64_t i, float absmax) {
    return m->book.code[m->codes[i]] * absmax;
}

static inline float lerp(float self, float end, float weight) { /* torch.lerp's formula */
    return fabsf(weight) < 0.5f ? self + weight * (end - self) : end - (end - self) * (1.0f - weight);
}

static void adamw_blocks(float *param, const float *grad, Moment *moment, Moment *rms, int64_t n, int64_t first,
                         int64_t last, const double *s) {
    const float w1 = (float)(1.0 - s[1]), beta2 = (float)s[2], w2 = (float)(1.0 - s[2]), eps = (float)s[3];
    const float keep = (float)(1.0 - s[0] * s[4]), step_size = (float)(-s[0] / (1.0 - pow(s[1], s[5])));
    const float correction2 = (float)sqrt(1.0 - pow(s[2], s[5])), inverse2 = 1.0f / correction2;
    float m[BLOCK], r[BLOCK];
    for (int64_t block = first; block < last; block++) {
        int64_t offset = block * BLOCK;
        int size = (int)(n - offset < BLOCK ? n - offset : BLOCK);
        float m_absmax = moment->absmax[block], r_absmax = rms->absmax[block], m_amax = 0.0f, r_amax = 0.0f;
        for (int i = 0; i < size; i++) {
            float g = grad[offset + i];
            m[i] = lerp(dequantized(moment, offset + i, m_absmax), g, w1);
            float v = dequantized(rms, offset + i, r_absmax);
            v = v * v * beta2 + w2 * g * g;
            r[i] = sqrtf(v);
            m_amax = fmaxf(m_amax, fabsf(m[i]));
            r_amax = fmaxf(r_amax, r[i]);
            float denom = r[i] * inverse2 + eps; /* the twin divides: equal to float rounding */
            param[offset + i] = param[offset + i] * keep + step_size * m[i] / denom;
        }
        quantize_block(m, size, m_amax, moment, offset, block);
        quantize_block(r, size, r_amax, rms, offset, block);
    }
}

static void lion_blocks(float *param, const float *grad, Moment *moment, int64_t n, int64_t first, int64_t last,
                        const double *s) {
    const float lr = (float)s[0], beta1 = (float)s[1], w2 = (float)(1.0 - s[2]), keep = (float)(1.0 - s[0] * s[3]);
    float m[BLOCK];
    for (int64_t block = first; block < last; block++) {
        int64_t offset = block * BLOCK;
        int size = (int)(n - offset < BLOCK ? n - offset : BLOCK);
        float absmax = moment->absmax[block], amax = 0.0f;
        for (int i = 0; i < size; i++) {
            float g = grad[offset + i], stored = dequantized(moment, offset + i, absmax);
            float c = lerp(g, stored, beta1);
            float sign = (float)((c > 0.0f) - (c < 0.0f));
            m[i] = lerp(stored, g, w2);
            amax = fmaxf(amax, fabsf(m[i]));
            param[offset + i] = param[offset + i] * keep - lr * sign;
        }
        quantize_block(m, size, amax, moment, offset, block);
    }
}

static PyObject *adamw(PyObject *self, PyObject *args) {
    unsigned long long param, grad;
    long long n, first, last;
    PyObject *moment_args, *rms_args;
    double s[6]; /* lr, beta1, beta2, eps, weight decay, step */
    Moment moment, rms;
    if (!PyArg_ParseTuple(args, "KKOOLLLdddddd", &param, &grad, &moment_args, &rms_args, &n, &first, &last, &s[0],
                          &s[1], &s[2], &s[3], &s[4], &s[5]) ||
        parse_moment(moment_args, &moment) < 0 || parse_moment(rms_args, &rms) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    adamw_blocks((float *)(uintptr_t)param, (const float *)(uintptr_t)grad, &moment, &rms, n, first, last, s);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *lion(PyObject *self, PyObject *args) {
    unsigned long long param, grad;
    long long n, first, last;
    PyObject *moment_args;
    double s[4]; /* lr, beta1, beta2, weight decay */
    Moment moment;
    if (!PyArg_ParseTuple(args, "KKOLLLdddd", &param, &grad, &moment_args, &n, &first, &last, &s[0], &s[1], &s[2],
                          &s[3]) ||
        parse_moment(moment_args, &moment) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    lion_blocks((float *)(uintptr_t)param, (const float *)(uintptr_t)grad, &moment, n, first, last, s);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"adamw", adamw, METH_VARARGS, "AdamW8bit's step over blocks first .. last - 1 of one tensor."},
    {"lion", lion, METH_VARARGS, "Lion8bit's step over blocks first .. last - 1 of one tensor."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "The 8-bit optimizers' fused CPU step.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
