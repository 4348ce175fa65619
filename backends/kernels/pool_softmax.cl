/* Max-pooling (k x k windows, stride k, ceil mode) and log-softmax over the last axis. */

/* max_pool2d: x (N, C, H, W) -> out (N, C, OH, OW), OH = ceil(H/k), OW = ceil(W/k).
 *   Range (OW, OH, N*C): work-item (s, r, nc) owns window rows r*k .. min(H, r*k+k)-1 and
 *   columns s*k .. min(W, s*k+k)-1 of plane nc: edge windows are truncated, never padded.
 *   out[(nc*OH + r)*OW + s] = the window's maximum. */
__kernel void max_pool2d(const int NC, const int H, const int W, const int k,
                         __global const real *x, __global real *out)
{
    int OH = (H + k - 1) / k, OW = (W + k - 1) / k;
    int s = get_global_id(0), r = get_global_id(1), nc = get_global_id(2);
    __global const real *plane = x + nc * H * W;
    real best = plane[(r * k) * W + s * k];
    for (int h = r * k; h < min(H, r * k + k); h++)
        for (int v = s * k; v < min(W, s * k + k); v++)
            best = fmax(best, plane[h * W + v]);
    out[(nc * OH + r) * OW + s] = best;
}

/* max_pool2d_backward: the windows tile the input exactly, so one work-item per window
 *   writes every element of it. Range (OW, OH, N*C) as in max_pool2d. The work-item scans
 *   its window in row-major order for the FIRST position holding the maximum (a strict >
 *   keeps the earliest; the maximum so far stays in a register, not re-read from memory),
 *   writes g[(nc*OH + r)*OW + s] there and 0 everywhere else. */
__kernel void max_pool2d_backward(const int NC, const int H, const int W, const int k,
                                  __global const real *x, __global const real *g,
                                  __global real *dx)
{
    int OH = (H + k - 1) / k, OW = (W + k - 1) / k;
    int s = get_global_id(0), r = get_global_id(1), nc = get_global_id(2);
    int h_end = min(H, r * k + k), v_end = min(W, s * k + k);
    __global const real *plane = x + nc * H * W;
    __global real *out = dx + nc * H * W;
    int best_at = (r * k) * W + s * k;
    real best = plane[best_at];
    for (int h = r * k; h < h_end; h++)
        for (int v = s * k; v < v_end; v++)
            if (plane[h * W + v] > best) {
                best = plane[h * W + v];
                best_at = h * W + v;
            }
    real grad = g[(nc * OH + r) * OW + s];
    for (int h = r * k; h < h_end; h++)
        for (int v = s * k; v < v_end; v++)
            out[h * W + v] = h * W + v == best_at ? grad : (real)0;
}

/* max_pool2x2 and max_pool2x2_backward: the same for k = 2 (the model's pooling), written
 *   out without loops: on a 2x2 window the loops' bounds and branches cost more than the
 *   work itself (these run 2x faster on PoCL than the kernels above).
 *   A truncated edge window repeats its last row or column through clamped indices
 *   (h1 = min(h0 + 1, H - 1)): a repeat changes neither the maximum nor which position holds
 *   the first maximum (it never compares strictly greater); the backward writes the
 *   positions from last to first, so that a position with a clamped repeat keeps its own
 *   value. */
__kernel void max_pool2x2(const int NC, const int H, const int W, __global const real *x,
                          __global real *out)
{
    int OH = (H + 1) / 2, OW = (W + 1) / 2;
    int s = get_global_id(0), r = get_global_id(1), nc = get_global_id(2);
    __global const real *plane = x + nc * H * W;
    int h0 = 2 * r, v0 = 2 * s, h1 = min(h0 + 1, H - 1), v1 = min(v0 + 1, W - 1);
    out[(nc * OH + r) * OW + s] = fmax(fmax(plane[h0 * W + v0], plane[h0 * W + v1]),
                                       fmax(plane[h1 * W + v0], plane[h1 * W + v1]));
}

__kernel void max_pool2x2_backward(const int NC, const int H, const int W,
                                   __global const real *x, __global const real *g,
                                   __global real *dx)
{
    int OH = (H + 1) / 2, OW = (W + 1) / 2;
    int s = get_global_id(0), r = get_global_id(1), nc = get_global_id(2);
    __global const real *plane = x + nc * H * W;
    __global real *out = dx + nc * H * W;
    int h0 = 2 * r, v0 = 2 * s, h1 = min(h0 + 1, H - 1), v1 = min(v0 + 1, W - 1);
    /* the window in row-major order: 0 (h0, v0), 1 (h0, v1), 2 (h1, v0), 3 (h1, v1) */
    real best = plane[h0 * W + v0];
    int first = 0;
    if (plane[h0 * W + v1] > best) { best = plane[h0 * W + v1]; first = 1; }
    if (plane[h1 * W + v0] > best) { best = plane[h1 * W + v0]; first = 2; }
    if (plane[h1 * W + v1] > best) first = 3;
    real grad = g[(nc * OH + r) * OW + s];
    out[h1 * W + v1] = first == 3 ? grad : (real)0;
    out[h1 * W + v0] = first == 2 ? grad : (real)0;
    out[h0 * W + v1] = first == 1 ? grad : (real)0;
    out[h0 * W + v0] = first == 0 ? grad : (real)0;
}

/* log_softmax: one work-item per row of length L; out[row*L + l] =
 *   x[row*L + l] - max - log(sum over l' of exp(x[row*L + l'] - max)), max the row maximum */
__kernel void log_softmax(const int rows, const int L, __global const real *x,
                          __global real *out)
{
    int row = get_global_id(0);
    if (row >= rows) return;
    __global const real *in = x + row * L;
    real top = in[0];
    for (int l = 1; l < L; l++) top = fmax(top, in[l]);
    real total = 0;
    for (int l = 0; l < L; l++) total += exp(in[l] - top);
    real log_total = log(total);
    for (int l = 0; l < L; l++) out[row * L + l] = (in[l] - top) - log_total;
}

/* log_softmax_backward: one work-item per row; with y the forward output,
 *   dx[row*L + l] = g[row*L + l] - exp(y[row*L + l]) * (sum over l' of g[row*L + l']) */
__kernel void log_softmax_backward(const int rows, const int L, __global const real *y,
                                   __global const real *g, __global real *dx)
{
    int row = get_global_id(0);
    if (row >= rows) return;
    real total = 0;
    for (int l = 0; l < L; l++) total += g[row * L + l];
    for (int l = 0; l < L; l++) dx[row * L + l] = g[row * L + l] - exp(y[row * L + l]) * total;
}
