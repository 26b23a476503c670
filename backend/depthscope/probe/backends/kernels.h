/* depthscope's statistics kernels for the CPU: the tables Python and C share, and the kernels.
 *
 * Every table here is exported by the extension module (module.c) and checked by Python when it
 * loads it (kernels.py), so the two sides cannot drift apart silently. Every kernel writes only
 * through OUT_PUT, which checks the index against the output buffer's length: a kernel returns 0,
 * or 1 with the offending index in *bad and nothing written there.
 */
#ifndef DEPTHSCOPE_KERNELS_H
#define DEPTHSCOPE_KERNELS_H

#include <stdint.h>

#define DS_TINY 1e-30f /* as depthscope.probe.metrics.TINY: the smallest histogram range */

/* The activation's health rules (depthscope.engine.activations.HealthRule), by kind. */
enum {
    HEALTH_NONE = 0,   /* no rule: every input is healthy, none is dead */
    HEALTH_WITHIN = 1, /* healthy where |u| <= param (sigmoid, tanh) */
    HEALTH_ABOVE = 2,  /* healthy where u > param (leaky ReLU, ELU, SELU) */
    HEALTH_RELU = 3,   /* healthy and active where u > 0 */
    HEALTH_PRELU = 4,  /* 1 above zero, the layer's slope a below (param: the fraction) */
    HEALTH_GELU = 5,   /* healthy where |gelu'(u)| >= param */
    HEALTH_SILU = 6,   /* healthy where |silu'(u)| >= param */
    HEALTH_KINDS
};

/* Columns of ds_hidden's `where` table, one row per layer: the slot in `out` of each of a hidden
 * layer's reductions (-1: not wanted), named as depthscope.probe.metrics names them. */
enum { COL_Z_SUM, COL_Z_SPREAD, COL_H_SUM, COL_H_SPREAD, COL_HEALTHY, COL_LIVE, COL_DH_NORM,
       COL_U_SUM, COL_U_SPREAD, COLUMNS };
#define COLUMN_NAMES                                                                      \
    {"sum(z)",  "spread(z)", "sum(h)", "spread(h)", "healthy(u)", "live(u)", "norm(dh)", \
     "sum(u)", "spread(u)"}

/* ds_readout's `where`: the slots of its numbers. */
enum { READ_ACCURACY, READ_SUM, READ_SPREAD, READ_DH_NORM, READOUT_SLOTS };
#define READOUT_NAMES {"accuracy", "sum(z)", "spread(z)", "norm(dh)"}

typedef struct {
    float *data;
    int64_t size; /* floats */
    int64_t bad;  /* the index of a refused write */
} Out;

int ds_norms(int count, const float *const *x, const int64_t *n, float *const *copies, Out *out,
             const int64_t *where);
int ds_total_norm(int count, const float *const *x, const int64_t *n, Out *out, int64_t at);
int ds_difference_norms(int count, const float *const *a, const float *const *b,
                        const int64_t *n, Out *out, const int64_t *where);
int ds_hidden(int layers, int64_t batch, int64_t width, const float *const *z,
              const float *const *h, const float *const *u, const float *const *g, int kind,
              float param, const float *const *slopes, int32_t *per_unit, Out *out,
              const int64_t *where);
int ds_readout(const float *logits, int64_t batch, int64_t classes, const int64_t *targets,
               const float *dlogits, Out *out, const int64_t *where);
int ds_histograms(int count, const float *const *x, const int64_t *n, int bins, Out *out,
                  const int64_t *where_lo, const int64_t *where_hi, const int64_t *where_counts);

#endif
