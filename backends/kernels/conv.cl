/* Convolution: valid cross-correlation with stride 1 and a square K x K kernel.
 *
 * Shapes: x (N, C, H, W), w (O, C, K, K), b (O,), output and its gradient g (N, O, OH, OW)
 * with OH = H - K + 1, OW = W - K + 1. P = OH * OW pixels per output map, KK = K * K.
 *
 * Two ways to compute the same numbers:
 *   - the direct kernels (conv2d_direct and its three gradients): one work-item per output
 *     element, looping over everything that is summed. Simple and obviously right; they are
 *     the reference the fast path is tested against.
 *   - im2col / col2im below plus matmul_tiled (matmul.cl): unfold the input so that the
 *     convolution becomes one large matrix product.
 */

/* conv2d_direct: out[n,o,r,s] = b[o] + sum over c, i, j of x[n,c,r+i,s+j] * w[o,c,i,j]
 *   output index t = ((n*O + o)*OH + r)*OW + s */
__kernel void conv2d_direct(const int N, const int C, const int H, const int W, const int O,
                            const int K, __global const real *x, __global const real *w,
                            __global const real *b, __global real *out)
{
    int OH = H - K + 1, OW = W - K + 1;
    int t = get_global_id(0);
    if (t >= N * O * OH * OW) return;
    int s = t % OW;
    int r = (t / OW) % OH;
    int o = (t / (OW * OH)) % O;
    int n = t / (OW * OH * O);
    real acc = 0;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                acc += x[((n * C + c) * H + r + i) * W + s + j] * w[((o * C + c) * K + i) * K + j];
    out[t] = acc + b[o];
}

/* conv2d_dx_direct: dx[n,c,h,v] = sum over o, i, j of g[n,o,h-i,v-j] * w[o,c,i,j],
 *   only where 0 <= h-i < OH and 0 <= v-j < OW;  input index t = ((n*C + c)*H + h)*W + v */
__kernel void conv2d_dx_direct(const int N, const int C, const int H, const int W, const int O,
                               const int K, __global const real *g, __global const real *w,
                               __global real *dx)
{
    int OH = H - K + 1, OW = W - K + 1;
    int t = get_global_id(0);
    if (t >= N * C * H * W) return;
    int v = t % W;
    int h = (t / W) % H;
    int c = (t / (W * H)) % C;
    int n = t / (W * H * C);
    real acc = 0;
    for (int o = 0; o < O; o++)
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) {
                int r = h - i, s = v - j;
                if (r >= 0 && r < OH && s >= 0 && s < OW)
                    acc += g[((n * O + o) * OH + r) * OW + s] * w[((o * C + c) * K + i) * K + j];
            }
    dx[t] = acc;
}

/* conv2d_dw_direct: dw[o,c,i,j] = sum over n, r, s of x[n,c,r+i,s+j] * g[n,o,r,s]
 *   weight index t = ((o*C + c)*K + i)*K + j */
__kernel void conv2d_dw_direct(const int N, const int C, const int H, const int W, const int O,
                               const int K, __global const real *x, __global const real *g,
                               __global real *dw)
{
    int OH = H - K + 1, OW = W - K + 1;
    int t = get_global_id(0);
    if (t >= O * C * K * K) return;
    int j = t % K;
    int i = (t / K) % K;
    int c = (t / (K * K)) % C;
    int o = t / (K * K * C);
    real acc = 0;
    for (int n = 0; n < N; n++)
        for (int r = 0; r < OH; r++)
            for (int s = 0; s < OW; s++)
                acc += x[((n * C + c) * H + r + i) * W + s + j] * g[((n * O + o) * OH + r) * OW + s];
    dw[t] = acc;
}

/* conv2d_db_direct: db[o] = sum over n, r, s of g[n,o,r,s] (P = OH*OW pixels per map) */
__kernel void conv2d_db_direct(const int N, const int O, const int P, __global const real *g,
                               __global real *db)
{
    int o = get_global_id(0);
    if (o >= O) return;
    real acc = 0;
    for (int n = 0; n < N; n++)
        for (int p = 0; p < P; p++) acc += g[(n * O + o) * P + p];
    db[o] = acc;
}

/* The fast-path kernels below run on 3-D index ranges, (column, row, plane), so that a
 * work-item finds its pixel without integer divisions (slow, unvectorised on CPUs); only the
 * plane index, shared by a whole row of work-items, is split into its parts.
 *
 * The matrices that matmul_tiled reads as its second operand B (K, Ncols) are written in
 * panels of TILE = 16 columns (see matmul.cl): element (k, j) at PANEL(k, j, K). Columns past
 * the last whole panel are padding that nothing reads. */
#define PANEL(k, j, K) (((j) / TILE) * (K) * TILE + (k) * TILE + (j) % TILE)

/* im2col_rows: cols is the (C*KK, N*P) matrix, in panels: row q = (c, i, j) = c*KK + i*K + j,
 *   column m = (n, r, s) = n*P + r*OW + s;  cols[PANEL(q, m, C*KK)] = x[n, c, r+i, s+j].
 *   Then w viewed as (O, C*KK) @ cols = the convolution as (O, N*P), which matmul stores as
 *   NCHW. Range (OW, OH, N*C*KK): s, r, and plane = n*C*KK + q, so that consecutive planes
 *   fill neighbouring rows of a panel (whole cache lines; 1.3x faster on PoCL than q*N + n). */
__kernel void im2col_rows(const int N, const int C, const int H, const int W, const int K,
                          __global const real *x, __global real *cols)
{
    int OH = H - K + 1, OW = W - K + 1;
    int s = get_global_id(0), r = get_global_id(1), plane = get_global_id(2);
    int q = plane % (C * K * K), n = plane / (C * K * K);
    int c = q / (K * K), i = (q / K) % K, j = q % K;
    int m = (n * OH + r) * OW + s;
    cols[PANEL(q, m, C * K * K)] = x[((n * C + c) * H + r + i) * W + s + j];
}

/* im2col_cols: the transpose of im2col_rows' matrix, (N*P, C*KK), in panels:
 *   cols[PANEL(m, q, N*P)] = x[n, c, r+i, s+j] with m = n*P + r*OW + s and q = c*KK + i*K + j
 *   as above. The weight gradient is then g viewed as (O, N*P) @ cols = (O, C*KK), g read
 *   in place through matmul_tiled's column groups. Range (OW, OH, C*KK*N): s, r, and
 *   plane = q*N + n (here faster than im2col_rows' order). */
__kernel void im2col_cols(const int N, const int C, const int H, const int W, const int K,
                          __global const real *x, __global real *cols)
{
    int OH = H - K + 1, OW = W - K + 1;
    int s = get_global_id(0), r = get_global_id(1), plane = get_global_id(2);
    int q = plane / N, n = plane % N;
    int c = q / (K * K), i = (q / K) % K, j = q % K;
    int m = (n * OH + r) * OW + s;
    cols[PANEL(m, q, N * OH * OW)] = x[((n * C + c) * H + r + i) * W + s + j];
}

/* col2im_rows: the adjoint of im2col_rows, gathering instead of scattering (no atomics), from
 *   d_cols, the (C*KK, N*P) gradient of its matrix, row-major (as matmul stores it):
 *   dx[n,c,h,v] = sum over i, j with 0 <= h-i < OH, 0 <= v-j < OW of
 *                 d_cols[(c*KK + i*K + j) * N*P + n*P + (h-i)*OW + (v-j)]
 *   Range (W, H, N*C): v, h, and plane = n*C + c. */
__kernel void col2im_rows(const int N, const int C, const int H, const int W, const int K,
                          __global const real *cols, __global real *dx)
{
    int OH = H - K + 1, OW = W - K + 1, P = OH * OW, NP = N * P;
    int v = get_global_id(0), h = get_global_id(1), plane = get_global_id(2);
    int n = plane / C, c = plane % C;
    real acc = 0;
    for (int i = 0; i < K; i++) {
        int r = h - i;
        if (r < 0 || r >= OH) continue;
        for (int j = 0; j < K; j++) {
            int s = v - j;
            if (s < 0 || s >= OW) continue;
            acc += cols[((c * K + i) * K + j) * NP + n * P + r * OW + s];
        }
    }
    dx[(plane * H + h) * W + v] = acc;
}

/* maps_to_rows: (N, C, P) -> the (C, N*P) matrix, in panels:
 *   out[PANEL(c, n*P + p, C)] = a[(n*C + c)*P + p].
 *   Turns an NCHW gradient into the (channels, batch*pixels) operand the input gradient's
 *   product needs. Range (P, N, C). */
__kernel void maps_to_rows(const int N, const int C, const int P, __global const real *a,
                           __global real *out)
{
    int p = get_global_id(0), n = get_global_id(1), c = get_global_id(2);
    out[PANEL(c, n * P + p, C)] = a[(n * C + c) * P + p];
}
