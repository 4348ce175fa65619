/* Elementwise kernels, reductions, transposes and the optimiser updates.
 *
 * `real` is float or double, chosen by the build options (-D real=float). Every kernel here
 * is one work-item per output element (or per output row/column where it says so). The
 * global size is rounded up to a whole number of work-groups, so each kernel first checks
 * that its index i lies below n.
 */

/* fill: out[i] = value */
__kernel void fill(const int n, const real value, __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = value;
}

/* fill_from_scalar: out[i] = s[0], spreading a shape-() buffer over a whole shape */
__kernel void fill_from_scalar(const int n, __global const real *s, __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = s[0];
}

/* add, sub, mul: out[i] = a[i] op b[i], shapes equal (the engine never broadcasts here) */
__kernel void add(const int n, __global const real *a, __global const real *b,
                  __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = a[i] + b[i];
}

__kernel void sub(const int n, __global const real *a, __global const real *b,
                  __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = a[i] - b[i];
}

__kernel void mul(const int n, __global const real *a, __global const real *b,
                  __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i];
}

/* neg: out[i] = -a[i] */
__kernel void neg(const int n, __global const real *a, __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = -a[i];
}

/* scale: out[i] = a[i] * c */
__kernel void scale(const int n, const real c, __global const real *a, __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = a[i] * c;
}

/* relu: out[i] = x[i] if x[i] > 0 else 0 */
__kernel void relu(const int n, __global const real *x, __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = x[i] > 0 ? x[i] : (real)0;
}

/* relu_backward: out[i] = g[i] where x[i] > 0, else 0 */
__kernel void relu_backward(const int n, __global const real *x, __global const real *g,
                            __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = x[i] > 0 ? g[i] : (real)0;
}

/* two_cdf(x) = 1 + erf(x / sqrt 2) = 2 * Phi(x), the factor GELU needs, for 8 numbers.
 * In double precision (gradient checks) the built-in erfc is exact enough. In float, the
 * built-in erfc is a slow scalar call on some drivers (PoCL), so a vector fit is used:
 * erfc(z) = t * exp(-z^2 + poly(t)), t = 1 / (1 + z/2), z >= 0, relative error
 * below 1.2e-7 (Numerical Recipes' Chebyshev fit), and 2 * Phi(x) = erfc(|x| / sqrt 2) for
 * x < 0, 2 - erfc(|x| / sqrt 2) for x >= 0. Only exp is called, on a whole vector. */
inline real8 two_cdf(real8 x)
{
#ifdef REAL_IS_DOUBLE
    return erfc(-x * (real)0.70710678118654752440);
#else
    real8 z = fabs(x) * (real)0.70710678118654752440;
    real8 t = (real)1 / ((real)1 + (real)0.5 * z);
    real8 poly = (real8)((real)0.17087277);
    poly = (real)-0.82215223 + t * poly;
    poly = (real)1.48851587 + t * poly;
    poly = (real)-1.13520398 + t * poly;
    poly = (real)0.27886807 + t * poly;
    poly = (real)-0.18628806 + t * poly;
    poly = (real)0.09678418 + t * poly;
    poly = (real)0.37409196 + t * poly;
    poly = (real)1.00002368 + t * poly;
    poly = (real)-1.26551223 + t * poly;
    real8 tail = t * exp(-z * z + poly);
    return x < (real)0 ? tail : (real)2 - tail;
#endif
}

/* The GELU kernels take 8 numbers per work-item as one vector, so that exp and the division
 * are vector instructions whatever the driver does with neighbouring work-items (twice as
 * fast on PoCL as one number per work-item).
 * Work-item t owns a[8t .. 8t+7]; the last one, where n is not a multiple of 8, copies its
 * part through a zero-padded private vector and writes back only the numbers below n. */
inline real8 load8(const int n, const int t, __global const real *a)
{
    if (8 * t + 8 <= n) return vload8(t, a);
    real part[8];
    for (int c = 0; c < 8; c++) part[c] = 8 * t + c < n ? a[8 * t + c] : (real)0;
    return vload8(0, part);
}

inline void store8(const int n, const int t, real8 value, __global real *out)
{
    if (8 * t + 8 <= n) {
        vstore8(value, t, out);
        return;
    }
    real part[8];
    vstore8(value, 0, part);
    for (int c = 0; 8 * t + c < n; c++) out[8 * t + c] = part[c];
}

/* gelu: out[i] = x * (1 + erf(x / sqrt 2)) / 2 = x * two_cdf(x) / 2; range ceil(n / 8) */
__kernel void gelu(const int n, __global const real *x, __global real *out)
{
    int t = get_global_id(0);
    if (8 * t >= n) return;
    real8 v = load8(n, t, x);
    store8(n, t, v * two_cdf(v) * (real)0.5, out);
}

/* gelu_backward: out[i] = g * (Phi(x) + x * phi(x)), with Phi(x) = two_cdf(x) / 2 the normal
 * cdf and phi(x) = exp(-x^2 / 2) / sqrt(2 pi) its density; range ceil(n / 8) */
__kernel void gelu_backward(const int n, __global const real *x, __global const real *g,
                            __global real *out)
{
    int t = get_global_id(0);
    if (8 * t >= n) return;
    real8 v = load8(n, t, x);
    real8 density = exp(v * v * (real)-0.5) * (real)0.39894228040143267794;
    store8(n, t, load8(n, t, g) * (two_cdf(v) * (real)0.5 + v * density), out);
}

/* strided_sum: a[first] + a[first + stride] + ... (count numbers), added in that order.
 * The four reductions below differ only in which numbers one work-item adds. */
inline real strided_sum(__global const real *a, int first, int count, int stride)
{
    real acc = 0;
    for (int z = 0; z < count; z++) acc += a[first + z * stride];
    return acc;
}

/* sum_chunks: partial[t] = sum of a[t*chunk .. min(n, (t+1)*chunk)), one work-item per chunk.
 * Called repeatedly (on the partial sums) until one value is left. */
__kernel void sum_chunks(const int n, const int chunk, __global const real *a,
                         __global real *partial)
{
    int t = get_global_id(0);
    int start = t * chunk;
    if (start >= n) return;
    partial[t] = strided_sum(a, start, min(n, start + chunk) - start, 1);
}

/* sum_slices: a holds `slices` blocks of n numbers; out[i] = sum over z of a[z*n + i]
 * (adds the split-K partial products of matmul_tiled) */
__kernel void sum_slices(const int n, const int slices, __global const real *a,
                         __global real *out)
{
    int i = get_global_id(0);
    if (i < n) out[i] = strided_sum(a, i, slices, n);
}

/* sum_rows: a is (rows, cols); out[j] = sum over i of a[i*cols + j], one work-item per column */
__kernel void sum_rows(const int rows, const int cols, __global const real *a,
                       __global real *out)
{
    int j = get_global_id(0);
    if (j < cols) out[j] = strided_sum(a, j, rows, cols);
}

/* row_sums: a is (rows, cols); out[i] = sum over j of a[i*cols + j], one work-item per row,
 * 8 numbers at a time in a vector (5x faster on PoCL than one at a time), then the vector's
 * parts and the last cols % 8 numbers. */
__kernel void row_sums(const int rows, const int cols, __global const real *a,
                       __global real *out)
{
    int i = get_global_id(0);
    if (i >= rows) return;
    __global const real *row = a + i * cols;
    real8 acc = (real8)(0);
    int j = 0;
    for (; j + 8 <= cols; j += 8) acc += vload8(0, row + j);
    out[i] = ((acc.s0 + acc.s1) + (acc.s2 + acc.s3)) + ((acc.s4 + acc.s5) + (acc.s6 + acc.s7))
             + strided_sum(row, j, cols - j, 1);
}

/* transpose: a is (rows, cols), out is (cols, rows).
 * Output element o: j = o / rows, i = o % rows; out[o] = out[j*rows + i] = a[i*cols + j] */
__kernel void transpose(const int rows, const int cols, __global const real *a,
                        __global real *out)
{
    int o = get_global_id(0);
    if (o >= rows * cols) return;
    int j = o / rows;
    int i = o % rows;
    out[o] = a[i * cols + j];
}

/* sgd_update, in place, heavy-ball momentum with weight decay wd:
 * v[i] = momentum*v[i] + g[i] + wd*p[i];  p[i] -= lr * v[i] */
__kernel void sgd_update(const int n, const real lr, const real momentum, const real wd,
                         __global real *p, __global const real *g, __global real *v)
{
    int i = get_global_id(0);
    if (i >= n) return;
    real vi = momentum * v[i] + g[i];
    if (wd != 0) vi += wd * p[i];
    v[i] = vi;
    p[i] -= lr * vi;
}

/* adam_update, in place. one_minus_b1 = 1 - b1 and the bias corrections bc1 = 1 - b1^step,
 * bc2 = 1 - b2^step come from the host, computed in double precision there:
 * d = g + wd*p;  m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d*d;
 * p -= lr * (m / bc1) / (sqrt(v / bc2) + eps) */
__kernel void adam_update(const int n, const real lr, const real b1, const real one_minus_b1,
                          const real b2, const real one_minus_b2, const real eps, const real wd,
                          const real bc1, const real bc2,
                          __global real *p, __global const real *g, __global real *m,
                          __global real *v)
{
    int i = get_global_id(0);
    if (i >= n) return;
    real d = g[i];
    if (wd != 0) d += wd * p[i];
    real mi = b1 * m[i] + one_minus_b1 * d;
    real vi = b2 * v[i] + one_minus_b2 * d * d;
    m[i] = mi;
    v[i] = vi;
    p[i] -= (lr * (mi / bc1)) / (sqrt(vi / bc2) + eps);
}
