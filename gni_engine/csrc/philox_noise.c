/* Counter-based Gaussian noise on the CPU: the stream of gni_engine.counter_noise, compiled.
 *
 * Run e's value i is lane i % 4 of Box-Muller(Philox4x32-10(key_e, start_e + i / 4)), exactly as
 * counter_noise.counter_normals defines it; the integer part (Philox, the 24-bit uniforms) is
 * bit-exact, log / cos / sin are float32 polynomials (Cephes) of a few ulp, so the values agree with
 * the torch definition to float32 rounding.
 *
 * Built with -ffp-contract=off and without -ffast-math: the vector and scalar paths (and the
 * AVX-512, AVX2 and baseline clones, chosen at load time) perform the same IEEE operations in the
 * same order, so a stream is bit-identical on every x86-64 machine. Loops run over blocks of BLOCK
 * counters, which GCC vectorises (32x32 -> 64-bit products, polynomials, selects; on AVX2 machines
 * Philox's products are written with intrinsics, see below); compiled by
 * gni_engine.counter_noise_cpu on first use, with -fopenmp where PyTorch's own OpenMP runtime
 * (libgomp) is loaded, so that blocks share PyTorch's threads.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 256 /* counters per block: 1024 values; 12 KiB of stack */
#define ROUND_A 0xD2511F53u
#define ROUND_B 0xCD9E8D57u
#define KEY_A 0x9E3779B9u
#define KEY_B 0xBB67AE85u

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GNI_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* Philox's 32x32 -> 64-bit products: GCC vectorises the plain loop below by widening to 64-bit lanes
 * and packing back with lane-crossing permutes, which on AVX2 is slower than SSE2 (2.2 against
 * 1.9 ns a normal on an AMD EPYC). The AVX2 path multiplies the even and odd 32-bit lanes in place
 * (vpmuludq) and blends the halves: 0.87 ns. The integer words are the same bits either way; the
 * AVX-512 clone keeps GCC's own vectorisation (it has the instructions that make it cheap), and
 * -DGNI_NO_INTRINSICS builds the plain loop alone (the tests compare the two). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(GNI_NO_INTRINSICS)
#define AVX2_PHILOX 1
#include <immintrin.h>

__attribute__((target("avx2"), always_inline)) static inline void mulhilo8(__m256i x, __m256i m, __m256i *hi,
                                                                         __m256i *lo) {
    __m256i even = _mm256_mul_epu32(x, m);                         /* lanes 0, 2, 4, 6 */
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);   /* lanes 1, 3, 5, 7 */
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* Philox4x32-10 of counters start .. start + count8 - 1 (count8 a multiple of 8), eight at a time
 * in registers through all ten rounds */
__attribute__((target("avx2"))) static void philox_avx2(uint64_t key, uint64_t start, int count8, uint32_t *c0,
                                                        uint32_t *c1, uint32_t *c2, uint32_t *c3) {
    const __m256i ma = _mm256_set1_epi32((int)ROUND_A), mb = _mm256_set1_epi32((int)ROUND_B);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int j = 0; j < count8; j += 8) {
        uint64_t first = start + (uint64_t)j;
        __m256i x0, x1, x2 = _mm256_setzero_si256(), x3 = _mm256_setzero_si256();
        if ((uint32_t)first <= 0xFFFFFFFFu - 7u) { /* the low words do not wrap within the eight */
            x0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)first), lanes);
            x1 = _mm256_set1_epi32((int)(uint32_t)(first >> 32));
        } else {
            uint32_t lo[8], hi[8];
            for (int i = 0; i < 8; i++) {
                lo[i] = (uint32_t)(first + (uint64_t)i);
                hi[i] = (uint32_t)((first + (uint64_t)i) >> 32);
            }
            x0 = _mm256_loadu_si256((const __m256i *)lo);
            x1 = _mm256_loadu_si256((const __m256i *)hi);
        }
        uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
        for (int round = 0; round < 10; round++) {
            if (round > 0) {
                k0 += KEY_A;
                k1 += KEY_B;
            }
            __m256i hi0, lo0, hi2, lo2;
            mulhilo8(x0, ma, &hi0, &lo0);
            mulhilo8(x2, mb, &hi2, &lo2);
            x0 = _mm256_xor_si256(_mm256_xor_si256(hi2, x1), _mm256_set1_epi32((int)k0));
            x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)k1));
            x1 = lo2;
            x3 = lo0;
        }
        _mm256_storeu_si256((__m256i *)(c0 + j), x0);
        _mm256_storeu_si256((__m256i *)(c1 + j), x1);
        _mm256_storeu_si256((__m256i *)(c2 + j), x2);
        _mm256_storeu_si256((__m256i *)(c3 + j), x3);
    }
}

/* AVX2 but not AVX-512 (whose clone vectorises the plain loop well) */
static inline int avx2_philox_wanted(void) {
    return __builtin_cpu_supports("avx2") && !__builtin_cpu_supports("avx512f");
}
#endif

/* natural log on (0, 1], Cephes logf: frexp by bit manipulation, degree-8 polynomial */
static inline __attribute__((always_inline)) float log_unit(float x) {
    union { float f; uint32_t u; } v = {x};
    int32_t e = (int32_t)((v.u >> 23) & 0xFF) - 126;
    v.u = (v.u & 0x807FFFFFu) | 0x3F000000u; /* mantissa in [0.5, 1) */
    float m = v.f;
    int32_t small = m < 0.707106781186547524f;
    e -= small;
    m = (m + (float)small * m) - 1.0f; /* 2m - 1 below 1 / sqrt 2, else m - 1 (both exact) */
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    float fe = (float)e;
    y = y + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    return (m + y) + fe * 0.693359375f;
}

/* sin and cos of x in [0, 2 pi + 1): quadrant reduction (Cody-Waite, three parts of pi / 2), then
 * Cephes' minimax polynomials on [-pi / 4, pi / 4] */
static inline __attribute__((always_inline)) void sincos_turn(float x, float *s_out, float *c_out) {
    int32_t q = (int32_t)(x * 0.636619772367581343f + 0.5f);
    float fq = (float)q;
    float r = ((x - fq * 1.5703125f) - fq * 4.837512969970703125e-4f) - fq * 7.54978995489188216e-8f;
    float z = r * r;
    float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
    float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z
              - 0.5f * z + 1.0f;
    /* quadrant q: sin x = (s, c, -s, -c)[q], cos x = (c, -s, -c, s)[q]; selections by exact
     * multiplications with 0 and 1, which GCC vectorises where it would not branch */
    float swap = (float)(q & 1), keep = 1.0f - swap;
    float sin_sign = (float)(1 - (q & 2)), cos_sign = (float)(1 - ((q + 1) & 2));
    *s_out = sin_sign * (keep * s + swap * c);
    *c_out = cos_sign * (keep * c + swap * s);
}

/* the 4 * count normals of counters start .. start + count - 1 (count <= BLOCK), in stream order */
static inline __attribute__((always_inline)) void normals_block(uint64_t key, uint64_t start, int count, float *out) {
    uint32_t c0[BLOCK], c1[BLOCK], c2[BLOCK], c3[BLOCK];
    int done = 0; /* counters the AVX2 path has taken */
#ifdef AVX2_PHILOX
    if (avx2_philox_wanted()) {
        done = count & ~7;
        philox_avx2(key, start, done, c0, c1, c2, c3);
    }
#endif
    for (int j = done; j < count; j++) {
        uint64_t ctr = start + (uint64_t)j;
        c0[j] = (uint32_t)ctr;
        c1[j] = (uint32_t)(ctr >> 32);
        c2[j] = 0;
        c3[j] = 0;
    }
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += KEY_A;
            k1 += KEY_B;
        }
        for (int j = done; j < count; j++) {
            uint64_t p0 = (uint64_t)ROUND_A * c0[j];
            uint64_t p1 = (uint64_t)ROUND_B * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
    }
    const float unit = 5.9604644775390625e-8f; /* 2^-24 */
    const float two_pi = 6.28318530717958647692f;
    float z0[BLOCK], z1[BLOCK], z2[BLOCK], z3[BLOCK];
    for (int j = 0; j < count; j++) {
        float r01 = sqrtf(-2.0f * log_unit((float)(int32_t)((c0[j] >> 8) + 1) * unit));
        float r23 = sqrtf(-2.0f * log_unit((float)(int32_t)((c2[j] >> 8) + 1) * unit));
        float s01, co01, s23, co23;
        sincos_turn(two_pi * ((float)(int32_t)((c1[j] >> 8) + 1) * unit), &s01, &co01);
        sincos_turn(two_pi * ((float)(int32_t)((c3[j] >> 8) + 1) * unit), &s23, &co23);
        z0[j] = r01 * co01;
        z1[j] = r01 * s01;
        z2[j] = r23 * co23;
        z3[j] = r23 * s23;
    }
    for (int j = 0; j < count; j++) {
        out[4 * j] = z0[j];
        out[4 * j + 1] = z1[j];
        out[4 * j + 2] = z2[j];
        out[4 * j + 3] = z3[j];
    }
}

/* Work is split into (run, block) pairs of BLOCK counters: with OpenMP (compiled with -fopenmp into
 * the process's own runtime, PyTorch's) over `threads` threads, else in order. Each value is a
 * function of its counter alone, so the split does not change a single bit. */

/* out[e, i] = eps[e, i], the first n values of each of E runs' streams */
CLONES static void normals_into(uint64_t key, uint64_t start, int len, float *out) {
    float buf[4 * BLOCK];
    normals_block(key, start, (len + 3) / 4, buf);
    memcpy(out, buf, (size_t)len * sizeof(float));
}

void gni_normals_f32(const int64_t *keys, const int64_t *starts, int64_t runs, int64_t n, float *out,
                     int threads) {
    (void)threads; /* unused without OpenMP */
    int64_t blocks = (n + 4 * BLOCK - 1) / (4 * BLOCK), total = runs * blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && total > 1)
    for (int64_t t = 0; t < total; t++) {
        int64_t e = t / blocks, i0 = (t % blocks) * 4 * BLOCK;
        int len = n - i0 < 4 * BLOCK ? (int)(n - i0) : 4 * BLOCK;
        normals_into((uint64_t)keys[e], (uint64_t)starts[e] + (uint64_t)(i0 / 4), len, out + e * n + i0);
    }
}

/* y[i] = x[i] + eps[i] s (a + m x[i]) for float and double x, eps from counter `start` on (float32, as
 * in the torch definition); s = +-1 (antithetic replay); additive_only skips m x */
#define DEFINE_INJECT(T, suffix)                                                                         \
    CLONES static void inject_block_##suffix(const T *x, T *y, T ae, T me, uint64_t key, uint64_t start, \
                                             int len, int additive_only) {                               \
        float buf[4 * BLOCK];                                                                            \
        normals_block(key, start, (len + 3) / 4, buf);                                                   \
        if (additive_only)                                                                               \
            for (int i = 0; i < len; i++) y[i] = x[i] + (T)buf[i] * ae;                                  \
        else                                                                                             \
            for (int i = 0; i < len; i++) y[i] = x[i] + (T)buf[i] * (ae + me * x[i]);                    \
    }                                                                                                    \
    void gni_inject_##suffix(const T *h, T *out, const T *a, const T *m, const int64_t *keys,             \
                             const int64_t *starts, int64_t offset, double sign, int64_t runs, int64_t n, \
                             int additive_only, int threads) {                                           \
        (void)threads;                                                                                   \
        int64_t blocks = (n + 4 * BLOCK - 1) / (4 * BLOCK), total = runs * blocks;                       \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && total > 1)") \
        for (int64_t t = 0; t < total; t++) {                                                            \
            int64_t e = t / blocks, i0 = (t % blocks) * 4 * BLOCK;                                       \
            int len = n - i0 < 4 * BLOCK ? (int)(n - i0) : 4 * BLOCK;                                    \
            uint64_t start = (uint64_t)starts[e] + (uint64_t)offset + (uint64_t)(i0 / 4);                \
            inject_block_##suffix(h + e * n + i0, out + e * n + i0, a[e] * (T)sign, m[e] * (T)sign,      \
                                  (uint64_t)keys[e], start, len, additive_only);                         \
        }                                                                                                \
    }

DEFINE_INJECT(float, f32)
DEFINE_INJECT(double, f64)

/* A hidden layer's bias, activation and noise in one pass (the CPU twin of the fused Triton kernel):
 * y = phi(z + b) + eps s (a + m phi(z + b)), phi = relu or identity, b (E, d) or NULL, values laid out
 * (example, feature) so that value i has feature i % d; noise == 0 gives phi(z + b) alone. For relu it
 * also writes the byte mask z + b > 0, which is all the backward needs of z (a quarter of its size,
 * so z can be freed at once). Backward: gz = g phi'(z + b) (1 + s m eps), phi' the mask (relu) or 1,
 * eps regenerated only for multiplicative noise (regen). */
#define DEFINE_ACTIVATE(T, suffix)                                                                       \
    CLONES static void activate_block_##suffix(const T *z, const T *b, T *y, uint8_t *mask, int64_t first, \
                                               int64_t d, int len, int relu, int noise, int additive_only, \
                                               T ae, T me, uint64_t key, uint64_t start) {                \
        for (int k = 0; k < len;) { /* row segments: feature j .. j + seg - 1 */                          \
            int64_t j = (first + k) % d;                                                                  \
            int seg = d - j < len - k ? (int)(d - j) : len - k;                                           \
            const T *zs = z + k;                                                                          \
            T *ys = y + k;                                                                                \
            if (b)                                                                                        \
                for (int i = 0; i < seg; i++) ys[i] = zs[i] + b[j + i];                                   \
            else                                                                                          \
                for (int i = 0; i < seg; i++) ys[i] = zs[i];                                              \
            if (relu) {                                                                                   \
                uint8_t *ms = mask + k;                                                                   \
                for (int i = 0; i < seg; i++) ms[i] = ys[i] > 0;                                          \
                for (int i = 0; i < seg; i++) ys[i] = ys[i] < 0 ? (T)0 : ys[i]; /* NaN stays NaN */      \
            }                                                                                             \
            k += seg;                                                                                     \
        }                                                                                                 \
        if (!noise) return;                                                                               \
        float buf[4 * BLOCK];                                                                             \
        normals_block(key, start, (len + 3) / 4, buf);                                                    \
        if (additive_only)                                                                                \
            for (int i = 0; i < len; i++) y[i] = y[i] + (T)buf[i] * ae;                                   \
        else                                                                                              \
            for (int i = 0; i < len; i++) y[i] = y[i] + (T)buf[i] * (ae + me * y[i]);                     \
    }                                                                                                     \
    CLONES static void activate_grad_block_##suffix(const T *g, const uint8_t *mask, T *gz, int len,      \
                                                    int regen, T me, uint64_t key, uint64_t start) {      \
        if (mask)                                                                                         \
            for (int i = 0; i < len; i++) gz[i] = mask[i] ? g[i] : (T)0;                                  \
        else                                                                                              \
            for (int i = 0; i < len; i++) gz[i] = g[i];                                                   \
        if (!regen) return;                                                                               \
        float buf[4 * BLOCK];                                                                             \
        normals_block(key, start, (len + 3) / 4, buf);                                                    \
        for (int i = 0; i < len; i++) gz[i] = gz[i] * (1 + me * (T)buf[i]);                               \
    }                                                                                                     \
    void gni_activate_##suffix(const T *z, const T *bias, T *out, uint8_t *mask, const T *a, const T *m,  \
                               const int64_t *keys, const int64_t *starts, int64_t offset, double sign,   \
                               int64_t runs, int64_t n, int64_t d, int relu, int noise, int additive_only, \
                               int threads) {                                                             \
        (void)threads;                                                                                    \
        int64_t blocks = (n + 4 * BLOCK - 1) / (4 * BLOCK), total = runs * blocks;                        \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && total > 1)")  \
        for (int64_t t = 0; t < total; t++) {                                                             \
            int64_t e = t / blocks, i0 = (t % blocks) * 4 * BLOCK;                                        \
            int len = n - i0 < 4 * BLOCK ? (int)(n - i0) : 4 * BLOCK;                                     \
            uint64_t start = (uint64_t)starts[e] + (uint64_t)offset + (uint64_t)(i0 / 4);                 \
            activate_block_##suffix(z + e * n + i0, bias ? bias + e * d : 0, out + e * n + i0,            \
                                    relu ? mask + e * n + i0 : 0, i0, d, len, relu, noise, additive_only, \
                                    a[e] * (T)sign, m[e] * (T)sign, (uint64_t)keys[e], start);            \
        }                                                                                                 \
    }                                                                                                     \
    void gni_activate_grad_##suffix(const T *g, const uint8_t *mask, T *gz, const T *m, const int64_t *keys, \
                                    const int64_t *starts, int64_t offset, double sign, int64_t runs,     \
                                    int64_t n, int regen, int threads) {                                  \
        (void)threads;                                                                                    \
        int64_t blocks = (n + 4 * BLOCK - 1) / (4 * BLOCK), total = runs * blocks;                        \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && total > 1)")  \
        for (int64_t t = 0; t < total; t++) {                                                             \
            int64_t e = t / blocks, i0 = (t % blocks) * 4 * BLOCK;                                        \
            int len = n - i0 < 4 * BLOCK ? (int)(n - i0) : 4 * BLOCK;                                     \
            uint64_t start = (uint64_t)starts[e] + (uint64_t)offset + (uint64_t)(i0 / 4);                 \
            activate_grad_block_##suffix(g + e * n + i0, mask ? mask + e * n + i0 : 0, gz + e * n + i0, len, \
                                         regen, m[e] * (T)sign, (uint64_t)keys[e], start);                \
        }                                                                                                 \
    }

DEFINE_ACTIVATE(float, f32)
DEFINE_ACTIVATE(double, f64)
