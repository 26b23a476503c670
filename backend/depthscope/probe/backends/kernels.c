/* depthscope's statistics kernels for the CPU (kernels.h declares them; module.c binds them
 * to Python; the probe's native backend, backends/native.py, calls them).
 *
 * The tensor-op backend reduces many layers per tensor op, but on small networks a recorded
 * step still pays for its ops, for copying every layer into one buffer, and for the passes over
 * that buffer. These kernels read each layer's tensors where autograd left them, layer by layer
 * while they are in the cache, one pass per tensor, and write every number straight into its
 * slot of the step's flat output buffer (transfer.py decides the slots; `where` arrays give
 * them). They compute the tensor-op backend's numbers from the same definitions, equal to float
 * rounding (histograms and counts exactly).
 *
 * Inputs are contiguous float32 arrays (the backend checks). Sums run in float lanes over blocks
 * of BLOCK values, each block's total then added in double: vectorised, and as accurate as a
 * pairwise sum for the sizes here. Nothing is reassociated behind the program's back (no
 * -ffast-math): NaN and infinity propagate as in torch, so a diverging layer still shows as
 * non-finite. Every write into the output goes through PUT, which refuses an index outside it.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* one build for any x86-64, with an AVX2 version picked at load time where the CPU has it */
#define KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define KERNEL
#endif
#define INLINE static inline __attribute__((always_inline))

/* out->data[at] = value, or return 1 with the index in out->bad when `at` lies outside. */
#define PUT(out, at, value)                                         \
    do {                                                            \
        int64_t at_ = (at);                                         \
        if (at_ < 0 || at_ >= (out)->size) {                        \
            (out)->bad = at_;                                       \
            return 1;                                               \
        }                                                           \
        (out)->data[at_] = (value);                                 \
    } while (0)
/* ... for the optional slots of a `where` table: -1 means not wanted */
#define PUT_WANTED(out, at, value)                                  \
    do {                                                            \
        if ((at) != -1) PUT(out, at, value);                        \
    } while (0)

#define BLOCK 1024
#define LANES 32 /* independent float accumulators: four AVX2 registers, no waiting on one */

/* The sum over i in [0, n) of TERM (an expression in i), in LANES float accumulators per
 * block of BLOCK values, each block's total then added in double. */
#define BLOCKED_SUM(total, n, TERM)                                          \
    do {                                                                   \
        for (int64_t start = 0; start < (n); start += BLOCK) {             \
            int64_t stop = start + BLOCK < (n) ? start + BLOCK : (n);      \
            float lane[LANES] = {0.0f};                                    \
            int64_t k = start;                                             \
            for (; k + LANES <= stop; k += LANES)                          \
                for (int j = 0; j < LANES; j++) {                          \
                    int64_t i = k + j;                                     \
                    lane[j] += (TERM);                                     \
                }                                                          \
            float rest = 0.0f;                                             \
            for (int64_t i = k; i < stop; i++) rest += (TERM);             \
            for (int j = 0; j < LANES; j++) rest += lane[j];               \
            (total) += rest;                                               \
        }                                                                  \
    } while (0)

/* sum of squares of x, copying x into copy unless it is NULL */
INLINE double squares_copy(const float *x, float *copy, int64_t n) {
    double total = 0.0;
    if (copy) memcpy(copy, x, (size_t)n * sizeof(float));
    BLOCKED_SUM(total, n, x[i] * x[i]);
    return total;
}

INLINE double squares_between(const float *a, const float *b, int64_t n) {
    double total = 0.0;
    BLOCKED_SUM(total, n, (a[i] - b[i]) * (a[i] - b[i]));
    return total;
}

/* The sum of x's n values and the sum of their squares about their mean, in one pass. The
 * values are taken about a shift, the mean of the first `row` of them, which lies within a
 * spread or so of the true mean: so the squares about the shift, less the squared mean offset,
 * keep their digits even where a deep sigmoid net's activations collapse to 0.5 ± 1e-4 (where
 * E[x²] − E[x]² in float would be noise). NaN and infinity come out non-finite. */
INLINE void moments_of(const float *x, int64_t n, int64_t row, double *sum, double *squares) {
    int64_t first = row < n ? row : n;
    double head = 0.0;
    for (int64_t i = 0; i < first; i++) head += x[i];
    float shift = first > 0 ? (float)(head / (double)first) : 0.0f;
    double offsets = 0.0, squared = 0.0;
    for (int64_t start = 0; start < n; start += BLOCK) {
        int64_t stop = start + BLOCK < n ? start + BLOCK : n;
        float lane[LANES] = {0.0f}, lane_squared[LANES] = {0.0f};
        int64_t k = start;
        for (; k + LANES <= stop; k += LANES)
            for (int j = 0; j < LANES; j++) {
                float d = x[k + j] - shift;
                lane[j] += d;
                lane_squared[j] += d * d;
            }
        float rest = 0.0f, rest_squared = 0.0f;
        for (; k < stop; k++) {
            float d = x[k] - shift;
            rest += d;
            rest_squared += d * d;
        }
        for (int j = 0; j < LANES; j++) {
            rest += lane[j];
            rest_squared += lane_squared[j];
        }
        offsets += rest;
        squared += rest_squared;
    }
    *sum = (double)shift * (double)n + offsets;
    double about_mean = squared - offsets * offsets / (double)n;
    *squares = about_mean < 0.0 ? 0.0 : about_mean; /* rounding only; NaN stays NaN */
}


/* Per array i of n[i] values: its norm into out[where[i]]; copied into copies[i] as well unless
 * copies is NULL. */
KERNEL int ds_norms(int count, const float *const *x, const int64_t *n, float *const *copies,
                    Out *out, const int64_t *where) {
    for (int i = 0; i < count; i++) {
        double squares = squares_copy(x[i], copies ? copies[i] : NULL, n[i]);
        PUT(out, where[i], (float)sqrt(squares));
    }
    return 0;
}

/* The norm of all the arrays together into out[at]. */
KERNEL int ds_total_norm(int count, const float *const *x, const int64_t *n, Out *out,
                         int64_t at) {
    double all = 0.0;
    for (int i = 0; i < count; i++) all += squares_copy(x[i], NULL, n[i]);
    PUT(out, at, (float)sqrt(all));
    return 0;
}

/* Per pair i of n[i] values: the norm of a[i] − b[i] into out[where[i]]. */
KERNEL int ds_difference_norms(int count, const float *const *a, const float *const *b,
                               const int64_t *n, Out *out, const int64_t *where) {
    for (int i = 0; i < count; i++) PUT(out, where[i], (float)sqrt(squares_between(a[i], b[i], n[i])));
    return 0;
}

INLINE int64_t count_within(const float *u, int64_t n, float bound) {
    int64_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t k = 0; k < n; k++) total += fabsf(u[k]) <= bound;
    return total;
}

INLINE int64_t count_above(const float *u, int64_t n, float threshold) {
    int64_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t k = 0; k < n; k++) total += u[k] > threshold;
    return total;
}

/* per unit, how many samples have u > 0: into per_unit[width]; returns their total */
INLINE int64_t positive_per_unit(const float *u, int64_t batch, int64_t width, int32_t *per_unit) {
    memset(per_unit, 0, (size_t)width * sizeof(int32_t));
    for (int64_t b = 0; b < batch; b++) {
        const float *row = u + b * width;
#pragma omp simd
        for (int64_t k = 0; k < width; k++) per_unit[k] += row[k] > 0.0f;
    }
    int64_t total = 0;
    for (int64_t k = 0; k < width; k++) total += per_unit[k];
    return total;
}

INLINE int64_t live_units(const int32_t *per_unit, int64_t width) {
    int64_t live = 0;
    for (int64_t k = 0; k < width; k++) live += per_unit[k] > 0;
    return live;
}

/* |f'(u)| >= threshold with f' computed in float as activations.py computes it */
INLINE int64_t count_derivative_at_least(const float *u, int64_t n, int kind, float threshold) {
    int64_t total = 0;
    for (int64_t k = 0; k < n; k++) {
        float v = u[k], d;
        if (kind == HEALTH_GELU) {
            float cdf = 0.5f * (1.0f + erff(v * (float)(1.0 / 1.4142135623730951)));
            float pdf = expf(-0.5f * (v * v)) * (float)(1.0 / 2.5066282746310002);
            d = cdf + v * pdf;
        } else {
            float s = 1.0f / (1.0f + expf(-v));
            d = s * (1.0f + v * (1.0f - s));
        }
        total += fabsf(d) >= threshold;
    }
    return total;
}

/* Over one layer's activation inputs u [batch, width]: how many (sample, unit) pairs are
 * healthy; for rules where f' can be zero, also how many units pass gradient for at least one
 * sample, into *live. slope: the layer's PReLU slope (HEALTH_PRELU only). per_unit: scratch
 * space for width counts. */
INLINE int64_t health_of(const float *u, int64_t batch, int64_t width, int kind, float param,
                         const float *slope, int32_t *per_unit, int64_t *live) {
    int64_t n = batch * width;
    if (kind == HEALTH_WITHIN) return count_within(u, n, param);
    if (kind == HEALTH_ABOVE) return count_above(u, n, param);
    if (kind == HEALTH_RELU) {
        int64_t positive = positive_per_unit(u, batch, width, per_unit);
        *live = live_units(per_unit, width);
        return positive;
    }
    if (kind == HEALTH_PRELU) {
        float a = fabsf(*slope);
        int negative_healthy = a >= param * fmaxf(a, 1.0f);
        int64_t positive = positive_per_unit(u, batch, width, per_unit);
        *live = *slope != 0.0f ? width : live_units(per_unit, width);
        return negative_healthy ? n : positive;
    }
    return count_derivative_at_least(u, n, kind, param);
}

/* Every hidden layer's numbers, layer by layer so that its tensors are still in the cache for
 * the next pass over them: z's sum and spread (norm about its mean), the health counts over the
 * activation inputs u (when kind != HEALTH_NONE), h's sum and spread (unless h is NULL: h is z),
 * the norm of dL/dh (unless g is NULL: the hooks took it), and u's own sum and spread where
 * they are wanted (u after a normalization; else u is z or h). Each tensor is [batch, width];
 * slopes[i] points at layer i's PReLU slope (HEALTH_PRELU only); per_unit is scratch space for
 * width counts; where[i * COLUMNS + column] is the slot of layer i's number in that column. */
KERNEL int ds_hidden(int layers, int64_t batch, int64_t width, const float *const *z,
                     const float *const *h, const float *const *u, const float *const *g,
                     int kind, float param, const float *const *slopes, int32_t *per_unit,
                     Out *out, const int64_t *where) {
    int64_t n = batch * width;
    double sum, squares;
    for (int i = 0; i < layers; i++) {
        const int64_t *at = where + (int64_t)i * COLUMNS;
        moments_of(z[i], n, width, &sum, &squares);
        PUT(out, at[COL_Z_SUM], (float)sum);
        PUT(out, at[COL_Z_SPREAD], (float)sqrt(squares));
        if (kind != HEALTH_NONE) {
            int64_t live = 0;
            int64_t healthy = health_of(u[i], batch, width, kind, param,
                                        slopes ? slopes[i] : NULL, per_unit, &live);
            PUT(out, at[COL_HEALTHY], (float)healthy);
            PUT_WANTED(out, at[COL_LIVE], (float)live);
        }
        if (h) {
            moments_of(h[i], n, width, &sum, &squares);
            PUT(out, at[COL_H_SUM], (float)sum);
            PUT(out, at[COL_H_SPREAD], (float)sqrt(squares));
        }
        if (g) PUT(out, at[COL_DH_NORM], (float)sqrt(squares_copy(g[i], NULL, n)));
        if (at[COL_U_SUM] != -1 || at[COL_U_SPREAD] != -1) {
            moments_of(u[i], n, width, &sum, &squares);
            PUT_WANTED(out, at[COL_U_SUM], (float)sum);
            PUT_WANTED(out, at[COL_U_SPREAD], (float)sqrt(squares));
        }
    }
    return 0;
}

/* The readout's numbers: the accuracy of logits [batch, classes] against targets (the first
 * largest logit wins, a NaN counting as largest, as torch.argmax does; NaN without targets), the
 * logits' sum and spread, and the norm of dL/dlogits, into out[where[READ_...]]. */
KERNEL int ds_readout(const float *logits, int64_t batch, int64_t classes, const int64_t *targets,
                      const float *dlogits, Out *out, const int64_t *where) {
    int64_t n = batch * classes;
    if (targets) {
        int64_t correct = 0;
        for (int64_t b = 0; b < batch; b++) {
            const float *row = logits + b * classes;
            int64_t best = 0;
            for (int64_t c = 1; c < classes && !isnan(row[best]); c++)
                if (row[c] > row[best] || isnan(row[c])) best = c;
            correct += best == targets[b];
        }
        PUT(out, where[READ_ACCURACY], (float)correct / (float)batch);
    } else {
        PUT(out, where[READ_ACCURACY], NAN);
    }
    double sum, squares;
    moments_of(logits, n, classes, &sum, &squares);
    PUT(out, where[READ_SUM], (float)sum);
    PUT(out, where[READ_SPREAD], (float)sqrt(squares));
    PUT(out, where[READ_DH_NORM], (float)sqrt(squares_copy(dlogits, NULL, n)));
    return 0;
}

/* Equal-width histograms of arrays between their min and max, as stats.RowHistograms makes
 * them: per array i, lo into out[where_lo[i]], hi into out[where_hi[i]], and bins counts from
 * out[where_counts[i]]. An array holding NaN gets NaN bounds, one holding ±inf an infinite
 * bound; the host empties both (transfer.read_histograms), so their counts are left at zero. */
KERNEL int ds_histograms(int count, const float *const *x, const int64_t *n, int bins, Out *out,
                         const int64_t *where_lo, const int64_t *where_hi,
                         const int64_t *where_counts) {
    for (int i = 0; i < count; i++) {
        const float *p = x[i];
        int64_t first = where_counts[i];
        if (bins < 1 || first < 0 || first > out->size - bins) {
            out->bad = first;
            return 1;
        }
        float lo = INFINITY, hi = -INFINITY;
        int nan = 0;
        for (int64_t k = 0; k < n[i]; k++) {
            float v = p[k];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            nan |= v != v;
        }
        if (nan) lo = hi = NAN;
        PUT(out, where_lo[i], lo);
        PUT(out, where_hi[i], hi);
        float *counts = out->data + first; /* [first, first + bins) lies inside: checked above */
        memset(counts, 0, (size_t)bins * sizeof(float));
        if (!isfinite(lo) || !isfinite(hi)) continue;
        float range = hi - lo;
        float scale = (float)bins / (range > DS_TINY ? range : DS_TINY);
        float last = (float)(bins - 1);
        for (int64_t k = 0; k < n[i]; k++) {
            float f = (p[k] - lo) * scale;
            f = f < 0.0f ? 0.0f : (f > last ? last : f);
            counts[(int)f] += 1.0f; /* floor: f >= 0, and at most bins - 1 */
        }
    }
    return 0;
}
