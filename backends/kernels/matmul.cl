/* Matrix products C = A @ B (+ bias), with A given TRANSPOSED, as At (K, M) row-major:
 * At[k*M + i] = A[i, k]. Then the 8 numbers of A that the tiled kernel needs for one k lie
 * side by side in one cache line (measured 2-3x faster on PoCL than 8 strided loads), and in
 * the convolution's gradients the operand is already stored that way.
 *
 * B (K, N) is row-major for matmul_simple. matmul_tiled also reads it in PANELS of TILE
 * columns (TILE = 16, from the build options): panel p holds columns 16p .. 16p+15 for every
 * k, B[k, j] at (j / 16) * K * 16 + k * 16 + j % 16, so one work-item's stream of 16-wide
 * rows of B is contiguous in memory instead of N numbers apart (1.3x to 3x faster on PoCL for
 * the large convolution products; the unfolding kernels in conv.cl write their matrices this
 * way). matmul_tiled takes the layout as two strides: B[k, j0 + c] (j0 a multiple of 16,
 * c < 16) is at j0 * b_panel + k * b_row + c: b_row = N, b_panel = 1 row-major; b_row = 16,
 * b_panel = K in panels.
 *
 *   bias_mode 0: no bias; 1: bias[i] added to row i (conv channels); 2: bias[j] to column j.
 *   P groups the columns for the store: column j of C goes to
 *       C[(j / P) * M * P + i * P + (j % P)].
 *   With P == N that is the ordinary C[i*N + j]. With P = OH*OW and N = batch * P, the
 *   (M, batch*P) product lands directly in (batch, M, P) order, i.e. NCHW, so a convolution
 *   needs no separate permute after its matrix product.
 */

inline int store_index(int i, int j, int M, int P)
{
    return (j / P) * M * P + i * P + (j % P);
}

inline real bias_for(int bias_mode, __global const real *bias, int i, int j)
{
    return bias_mode == 1 ? bias[i] : (bias_mode == 2 ? bias[j] : (real)0);
}

/* matmul_simple (the reference): one work-item per element of C.
 *   o = global id, i = o / N (row), j = o % N (column)
 *   C[store_index(i, j)] = sum over k of At[k*M + i] * B[k*N + j]  (+ bias) */
__kernel void matmul_simple(const int M, const int N, const int K, const int P,
                            const int bias_mode, __global const real *At,
                            __global const real *B, __global const real *bias,
                            __global real *C)
{
    int o = get_global_id(0);
    if (o >= M * N) return;
    int i = o / N;
    int j = o % N;
    real acc = 0;
    for (int k = 0; k < K; k++) acc += At[k * M + i] * B[k * N + j];
    C[store_index(i, j, M, P)] = acc + bias_for(bias_mode, bias, i, j);
}

/* matmul_tiled (the fast one): each work-item computes an 8 x 16 tile of C in registers.
 *   Work-item (x, y) = (get_global_id(0), get_global_id(1)) owns rows i0 = 8y .. 8y+7 and
 *   columns j0 = 16x .. 16x+15. For every k it loads the 16-wide vector b = B[k, j0 ..] and
 *   the 8 numbers a = A[i0 .. i0+7, k] and adds a[r] * b to row r of the tile: 128
 *   multiply-adds per 2 vector loads, where the simple kernel does 1 per 2 scalar loads. The
 *   vectors map onto SIMD lanes on a CPU (PoCL) and the tile stays in registers on a GPU.
 *   Each a[r] is loaded as a scalar and spread over the vector, which a CPU does in its load
 *   unit; taking it out of a vector of all 8 costs a shuffle on the ports that also do the
 *   multiply-adds. That, and 16 columns rather than 8 (half the spreads per multiply-add),
 *   made the convolution products 1.6x faster on PoCL.
 *
 *   A's layout: A[i, k] at (k / a_group) * M * a_group + i * a_group + k % a_group, the
 *   column groups of the store below applied to A. a_group = 1 is At (K, M) row-major, whose
 *   8 numbers are neighbours. a_group = OH*OW reads an NCHW gradient (N, M, OH*OW) as
 *   the (M, N*OH*OW) matrix the weight gradient needs, with no permuting pass over it first:
 *   its 8 numbers are then 8 loads a_group apart, each row a stream through memory.
 *
 *   A tile that sticks out past row M or column N keeps the tile's vector arithmetic: it
 *   reads only the columns of B that exist (the rest of its vector is 0), computes only the
 *   rows that exist, and stores only what lies inside C.
 *
 *   Split K: a third range dimension cuts the sum over k into slices of k_chunk terms, slice
 *   z = get_global_id(2) summing k = z*k_chunk .. min(K, (z+1)*k_chunk)-1 into its own block
 *   C + z*M*N (the backend then adds the blocks with sum_slices, and passes bias_mode 0 and
 *   P == N). A long sum (the weight gradient sums over batch * pixels) otherwise streams far
 *   more rows than the cache holds before the next work-item re-reads them; slices also give
 *   a product with few tiles enough work-items. With one slice, k_chunk = K. */
#if TILE != 16
#error "matmul_tiled is written for tiles 16 columns wide (real16 vectors)"
#endif
#define ROWS 8                                 /* rows of C per work-item */

/* B[k, j0 .. j0+7] where only the first `cols` columns exist; the others read as 0 */
inline real16 b_columns(__global const real *b_row_start, int cols)
{
    if (cols == TILE) return vload16(0, b_row_start);
    real part[TILE];
    for (int c = 0; c < TILE; c++) part[c] = c < cols ? b_row_start[c] : (real)0;
    return vload16(0, part);
}

__kernel void matmul_tiled(const int M, const int N, const int K, const int P,
                           const int bias_mode, const int k_chunk, const int b_row,
                           const int b_panel, const int a_group, __global const real *A,
                           __global const real *B, __global const real *bias,
                           __global real *C)
{
    int j0 = get_global_id(0) * TILE;
    int i0 = get_global_id(1) * ROWS;
    int k_begin = get_global_id(2) * k_chunk;
    int k_end = min(K, k_begin + k_chunk);
    C += get_global_id(2) * M * N;
    if (i0 >= M || j0 >= N) return;
    B += j0 * b_panel;                        /* B[k, j0 + c] = B[k * b_row + c] from here */
    int rows = min(ROWS, M - i0), cols = min(TILE, N - j0);

    if (rows == ROWS && cols == TILE) {
        real16 acc[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = (real16)(0);
        if (a_group == 1) {
            for (int k = k_begin; k < k_end; k++) {
                real16 b = vload16(0, B + k * b_row);
                __global const real *a = A + k * M + i0;
                acc[0] = fma((real16)(a[0]), b, acc[0]);
                acc[1] = fma((real16)(a[1]), b, acc[1]);
                acc[2] = fma((real16)(a[2]), b, acc[2]);
                acc[3] = fma((real16)(a[3]), b, acc[3]);
                acc[4] = fma((real16)(a[4]), b, acc[4]);
                acc[5] = fma((real16)(a[5]), b, acc[5]);
                acc[6] = fma((real16)(a[6]), b, acc[6]);
                acc[7] = fma((real16)(a[7]), b, acc[7]);
            }
        } else {
            /* column groups: walk k as (group, offset) instead of dividing for every k */
            int offset = k_begin % a_group;
            __global const real *group = A + (k_begin / a_group) * M * a_group + i0 * a_group;
            for (int k = k_begin; k < k_end; k++) {
                real16 b = vload16(0, B + k * b_row);
                __global const real *a = group + offset;
                acc[0] = fma((real16)(a[0]), b, acc[0]);
                acc[1] = fma((real16)(a[a_group]), b, acc[1]);
                acc[2] = fma((real16)(a[2 * a_group]), b, acc[2]);
                acc[3] = fma((real16)(a[3 * a_group]), b, acc[3]);
                acc[4] = fma((real16)(a[4 * a_group]), b, acc[4]);
                acc[5] = fma((real16)(a[5 * a_group]), b, acc[5]);
                acc[6] = fma((real16)(a[6 * a_group]), b, acc[6]);
                acc[7] = fma((real16)(a[7 * a_group]), b, acc[7]);
                if (++offset == a_group) {
                    offset = 0;
                    group += M * a_group;
                }
            }
        }
        bool one_group = (j0 % P) + TILE <= P;   /* the 16 columns are contiguous in C */
        for (int r = 0; r < ROWS; r++) {
            real16 row = acc[r];
            if (bias_mode == 1) row += (real16)(bias[i0 + r]);
            if (bias_mode == 2) row += vload16(0, bias + j0);
            if (one_group) {
                vstore16(row, 0, C + store_index(i0 + r, j0, M, P));
            } else {
                real values[TILE];
                vstore16(row, 0, values);
                for (int c = 0; c < TILE; c++) C[store_index(i0 + r, j0 + c, M, P)] = values[c];
            }
        }
        return;
    }

    /* an edge tile: rows and columns past M and N are neither read nor stored (the loops
     * over rows run to the constant ROWS, so that acc can stay in registers) */
    real16 acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = (real16)(0);
    int offset = k_begin % a_group;
    __global const real *group = A + (k_begin / a_group) * M * a_group + i0 * a_group;
    for (int k = k_begin; k < k_end; k++) {
        real16 b = b_columns(B + k * b_row, cols);
        for (int r = 0; r < ROWS; r++)
            if (r < rows) acc[r] = fma((real16)(group[offset + r * a_group]), b, acc[r]);
        if (++offset == a_group) {
            offset = 0;
            group += M * a_group;
        }
    }
    for (int r = 0; r < ROWS; r++) {
        if (r >= rows) break;
        real16 row = acc[r];
        if (bias_mode == 1) row += (real16)(bias[i0 + r]);
        if (bias_mode == 2) row += b_columns(bias + j0, cols);
        real values[TILE];
        vstore16(row, 0, values);
        for (int c = 0; c < cols; c++) C[store_index(i0 + r, j0 + c, M, P)] = values[c];
    }
}
