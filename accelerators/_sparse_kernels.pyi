"""Type stub of the C extension ``accelerators._sparse_kernels`` (sources: ``accelerators/_csrc``).

Sparse weight x dense activation kernels for CPU inference. Every array argument is an object
exporting the buffer protocol (numpy array, memoryview, ``tensor.numpy()``), C-contiguous, with
the dtype and shape given below; a wrong dtype or a non-buffer raises ``TypeError``, a wrong shape,
a non-contiguous or read-only output, overlapping input/output memory or a bad option raises
``ValueError``. Weights are validated and copied once by the ``pack_*`` functions. The ``spmm*``,
``ffn_int8``, ``qkv_attention_int8`` and ``attention`` calls run with ``threads`` OpenMP threads
and the GIL released. ``threads`` is an int in [1, ``thread_limit()``]: 4 per processor OpenMP
sees, at most OMP_THREAD_LIMIT and 1024. A larger count raises ValueError and a bool TypeError
(GNU libgomp exits the whole process when the OS refuses to create a thread, so counts far above
the machine's are refused before any thread starts).

Scratch buffers are cached between calls (``workspace_bytes()``): at most 8, each at most 4 MiB
per thread of the call that used it; a larger one (sized by a long input) is freed when its call
returns.

Shapes: ``n_out`` / ``n_in`` are the weight's output / input features, ``tokens`` the rows of the
activations (batch x sequence, flattened).
"""
from typing import Literal, final

from typing_extensions import Buffer

# "scalar", "avx2", "avx512", "vnni" or "amx"; None = the module default (kernel_variant()).
_Variant = str | None
# How threads share the work: "tokens" (each thread its own tokens, no barriers), "rows" (output
# rows, for few tokens) or "auto"/None (tokens when there are >= 64 per thread).
_Split = Literal["auto", "rows", "tokens"] | None
# Applied to the output before the residual: None/"none", or "gelu" (the erf form; libm erff in the
# scalar variant, a piecewise cubic of Phi within 2e-6 absolute in the avx2 and AVX-512 ones).
_Activation = Literal["none", "gelu"] | None

@final
class SparseMatrix:
    """Immutable packed sparse weight W (n_out, n_in), made by pack_csr, pack_bsr or pack_int8.

    Not constructible from Python; the arrays are private copies, validated once.
    """

    @property
    def shape(self) -> tuple[int, int]:
        """(n_out, n_in): the logical shape of W."""
    @property
    def block(self) -> tuple[int, int]:
        """(rows, cols) of one stored block: (1, 1) is CSR, (bh, 1) fp32 blocks, (bh, 4) int8."""
    @property
    def nblocks(self) -> int:
        """Number of stored blocks (16-row int8 blocks: padding blocks included)."""
    @property
    def nnz_stored(self) -> int:
        """Stored weights, zeros inside blocks included (nblocks * rows * cols)."""
    @property
    def dtype(self) -> Literal["fp32", "int8"]:
        """Element type of the stored weights."""
    @property
    def format(self) -> str:
        """'csr' or 'bsr{rows}x{cols}' (e.g. 'bsr4x1', 'bsr1x4')."""
    @property
    def panel(self) -> int:
        """Input columns per column panel (0 = none)."""
    @property
    def nbytes(self) -> int:
        """Bytes held by the packed arrays (a column-panel copy included)."""

def pack_csr(indptr: Buffer, indices: Buffer, values: Buffer, shape: tuple[int, int], panel: int = -1) -> SparseMatrix:
    """CSR fp32 weight of shape (n_out, n_in), n_out and n_in < 2**31.

    indptr: int32/int64 (n_out + 1,), indptr[0] == 0, non-decreasing, indptr[-1] == nnz.
    indices: int32/int64 (nnz,), each in [0, n_in); unsorted rows are sorted, duplicates add up.
    values: float32 (nnz,).
    panel: input columns per column panel; -1 chooses from the density, 0 = none.
    """

def pack_bsr(
    indptr: Buffer, indices: Buffer, values: Buffer, shape: tuple[int, int], block: int = 4, panel: int = -1
) -> SparseMatrix:
    """Block-row fp32 weight: blocks of `block` (1, 2, 4 or 8) consecutive output rows x 1 column.

    indptr: int32/int64 (ceil(n_out / block) + 1,); indices: int32/int64 (nblocks,) input columns;
    values: float32 (nblocks, block) or (nblocks * block,), block-major. Rows past n_out in the last
    block are ignored. panel as pack_csr (default: none for blocks).
    """

def pack_int8(
    indptr: Buffer, indices: Buffer, values: Buffer, w_scale: Buffer, shape: tuple[int, int], block: int = 1
) -> SparseMatrix:
    """INT8 weight: blocks of `block` (1, 2, 4, 8 or 16) output rows x 4 input columns ("quads").

    indptr: int32/int64 (ceil(n_out / block) + 1,); indices: int32/int64 (nblocks,) quad numbers in
    [0, ceil(n_in / 4)); values: int8 with nblocks * block * 4 entries laid out (block, row, col)
    (1-D, 2-D or 3-D); w_scale: float32 (n_out,), finite >= 0, W ~= w_scale[o] * W_q[o].
    n_in <= 65536 and at most 16384 quads per block row, repeated indices included (exact int32
    accumulation). Raises ValueError beyond. Blocks of 16 rows (one row of an AMX weight tile) are
    stored with every block row padded by zero blocks to a multiple of 16 blocks, which
    ``nblocks`` counts; the ``amx`` variant multiplies them on AMX tiles.
    """

def spmm(
    mat: SparseMatrix,
    x: Buffer,
    out: Buffer,
    bias: Buffer | None = None,
    threads: int = 1,
    variant: _Variant = None,
    tile: int = 0,
    token_block: int = 0,
    split: _Split = None,
    activation: _Activation = None,
    residual: Buffer | None = None,
    ln_weight: Buffer | None = None,
    ln_bias: Buffer | None = None,
    ln_eps: float = 1e-12,
) -> None:
    """out = LayerNorm(act(x @ W.T + bias) + residual), each stage optional; mat is fp32.

    x: float32 (tokens, n_in); out: writable float32 (tokens, n_out), not overlapping x, bias or
    residual; bias: float32 (n_out,); residual: float32 (tokens, n_out); ln_weight / ln_bias:
    float32 (n_out,) (ln_bias only with ln_weight), ln_eps finite >= 0 (biased variance, as
    torch.nn.LayerNorm). threads in [1, thread_limit()]. tile: tokens per register tile, 0 = auto or a power
    of two in [16, 256]; token_block: tokens per packed block, 0 = auto.
    """

def spmm_int8(
    mat: SparseMatrix,
    x: Buffer,
    out: Buffer,
    bias: Buffer | None = None,
    threads: int = 1,
    variant: _Variant = None,
    per_token: bool = True,
    tile: int = 0,
    token_block: int = 0,
    split: _Split = None,
    activation: _Activation = None,
    residual: Buffer | None = None,
    ln_weight: Buffer | None = None,
    ln_bias: Buffer | None = None,
    ln_eps: float = 1e-12,
    x_scale: Buffer | None = None,
    out_scale: Buffer | None = None,
    x_amax: Buffer | None = None,
    out_amax: Buffer | None = None,
) -> None:
    """out = dequant(quant(x) @ W_q.T) + bias, then activation, residual, LayerNorm as in spmm; mat is int8.

    x: float32 (tokens, n_in), quantized symmetrically per token (per_token=False: one scale for
    all of x): x_q = clamp(rint(x * 127 / amax), -127, 127); out[t, o] = acc * (amax_t / 127) *
    w_scale[o] + bias[o]. With x_scale (float32 (tokens,)), x is int8 (tokens, n_in) already
    quantized (x ~= x_scale[t] * x_q) and per_token is ignored; each x_scale entry is >= 0 and
    finite, or NaN (what out_scale writes for a non-finite token: its outputs are NaN); a negative
    or infinite one raises ValueError. With out_scale (writable float32
    (tokens,)), out is int8 (tokens, n_out): the fp32 result quantized per token by the same rule,
    its scales written to out_scale. Otherwise out is float32 (tokens, n_out). A range that is 0
    or below 3.8e-37 gives x_q = 0 with scale 0 (out = bias); a token holding NaN or inf gives
    x_q = 0 with scale NaN, so its outputs are NaN (per tensor: every output), as torch's would be.
    Every finite range up to float32's max (3.4e38) is quantized like any other; outputs whose sums
    exceed float32's range are +-inf, as torch's are.
    x_amax: float32 (tokens,), max |x| per token (NaN as +inf) of a float32 x, already known (the
    out_amax of the call that wrote x): the range pass over x is skipped. A NaN entry gives its
    token NaN outputs (per_token=False: every token, since it is the tensor's range); other wrong
    ranges give wrong quantization, never a crash. out_amax: writable
    float32 (tokens,) that receives the same ranges of a float32 out, after the epilogues.
    """

def ffn_int8(
    mat_in: SparseMatrix,
    mat_out: SparseMatrix,
    x: Buffer,
    out: Buffer,
    bias_in: Buffer | None = None,
    bias_out: Buffer | None = None,
    threads: int = 1,
    variant: _Variant = None,
    tile: int = 0,
    token_block: int = 0,
    activation: _Activation = None,
    residual: Buffer | None = None,
    ln_weight: Buffer | None = None,
    ln_bias: Buffer | None = None,
    ln_eps: float = 1e-12,
    x_amax: Buffer | None = None,
    out_amax: Buffer | None = None,
) -> None:
    """A feed-forward block in two INT8 products; the intermediate never leaves the call:
    mid = act(dequant(quant(x) @ W_in_q.T) + bias_in), out = LN(dequant(quant(mid) @ W_out_q.T) +
    bias_out + residual). x float32 (tokens, n_in), out float32 (tokens, n_out); mat_out's n_in is
    mat_in's n_out; quant() per token for both. Bit-identical to spmm_int8(mat_in, ...,
    out_scale=s) then spmm_int8(mat_out, ..., x_scale=s). Threads split the tokens; x_amax /
    out_amax as spmm_int8.
    """

def qkv_attention_int8(
    mat: SparseMatrix,
    x: Buffer,
    out: Buffer,
    num_heads: int,
    bias: Buffer | None = None,
    scale: float = ...,
    key_bias: Buffer | None = None,
    threads: int = 1,
    variant: _Variant = None,
    x_amax: Buffer | None = None,
) -> None:
    """Self-attention's stacked q / k / v product and INT8 attention in one call: qkv =
    dequant(quant(x) @ W_q.T) + bias, out = attention(qkv, num_heads, scale, key_bias,
    precision="int8"). mat int8 with n_out = 3 * hidden; x float32 (batch, seq, n_in); out
    writable float32 (batch, seq, hidden); bias (3 * hidden,); key_bias float32 (batch, seq);
    x_amax as spmm_int8. Bit-identical to spmm_int8 then attention(precision="int8"); the
    product's rows stay channel-major and go straight into each head's INT8 layouts.
    """

def spmm_int8_raw(
    mat: SparseMatrix,
    x: Buffer,
    out: Buffer,
    threads: int = 1,
    variant: _Variant = None,
    tile: int = 0,
    token_block: int = 0,
    split: _Split = None,
) -> None:
    """Exact integer product out = x @ W_q.T: x int8 (tokens, n_in), out writable int32 (tokens, n_out)."""

def attention(
    qkv: Buffer,
    out: Buffer,
    num_heads: int,
    scale: float = ...,
    key_bias: Buffer | None = None,
    threads: int = 1,
    variant: _Variant = None,
    precision: Literal["fp32", "int8"] = "fp32",
) -> None:
    """Fused multi-head self-attention: out = softmax(scale * Q K^T + key_bias) V per head.

    qkv: float32 (batch, seq, 3 * hidden), q | k | v side by side, hidden = num_heads * head_dim
    with heads contiguous (BERT's layout); out: writable float32 (batch, seq, hidden), not
    overlapping the inputs; key_bias: float32 (batch, seq) added to every query's scores for that
    key (0 keeps, -inf masks; NaN or +inf raise ValueError); a query whose keys are all -inf
    (int8: all <= -10000) gets zeros. NaN as torch gives it: a query row with a NaN score (fp32)
    or a NaN / inf value or a score overflowing to +inf (int8) gets NaN outputs; int8: a NaN / inf
    in an unmasked key or value row, the whole head. scale: finite; omitted (or negative) = 1 / sqrt(head_dim).
    precision: "fp32", or "int8": q, k quantized per row and v per channel over the unmasked keys
    (key_bias <= -10000 masks, as -inf, transformers' finfo(float32).min and BERT's -10000 do:
    padding then leaves a sequence's result as it is alone; symmetric, 127 levels), Q K^T and P V as exact int32 sums, the softmax
    numerators rounded to uint8 rint(255 e) and normalised by their integer sum; seq <= 65536 and
    head_dim <= 65536. Raises ValueError for another precision, a longer seq or a wider head.
    """

def kernel_variant() -> str:
    """The module default variant (the best the CPU supports short of the opt-in amx, or
    SPARSEBENCH_KERNEL_VARIANT)."""

def compiled_variants() -> list[str]:
    """Variants compiled into this build, in order scalar, avx2, avx512, vnni, amx."""

def supported_variants() -> list[str]:
    """Compiled variants this CPU can run."""

def check_variant(name: str | None, /) -> str:
    """The variant a call's ``variant=name`` runs (None: the module default). Raises ValueError, as that
    call would, for an unknown, uncompiled or unsupported name, or when the OS refuses ``amx`` the
    tile state (requested here the first time ``amx`` is chosen)."""

def set_kernel_variant(name: str | None, /) -> str:
    """Set the module default (None = the best supported short of amx); returns the previous one.

    Raises ValueError for an unknown, uncompiled or unsupported name.
    """

def max_threads() -> int:
    """Processors OpenMP sees (1 in a build without OpenMP)."""

def thread_limit() -> int:
    """The largest ``threads`` a call accepts: 4 x max_threads(), at most OMP_THREAD_LIMIT and 1024
    (1024 in a build without OpenMP, which ignores threads). Fixed at import: the processors
    OpenMP sees then (the process's CPU affinity and OMP_THREAD_LIMIT at that time)."""

def check_threads(n: int, /) -> int:
    """``n``, checked as a call's ``threads=n`` is (what SparseLinear uses at construction).

    Raises TypeError for a bool or a non-integer, ValueError outside [1, thread_limit()] (the
    message names the value and the limit).
    """

def workspace_bytes() -> int:
    """Bytes of scratch buffers the module keeps cached between calls. At most 8 buffers, each
    at most 4 MiB per thread of the call that used it (a BERT-sized layer at 128-token blocks
    needs 0.05 to 1.5 MiB per thread), so a call on a long input frees its large buffers when it
    returns instead of holding them for the life of the process."""
