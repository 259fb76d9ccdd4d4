using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.Intrinsics;

namespace OrleansPush.Client;

/// <summary>
/// Fossil deltas (the format of the Fossil SCM, also used by Centrifugo's delta compression): <see cref="Create"/>
/// encodes a target as copies from a source plus literal bytes, <see cref="Apply"/> rebuilds the target from the source.
/// </summary>
/// <remarks>
/// <para>The format, written from its description (fossil-scm.org, <c>www/delta_format.wiki</c>): a header
/// <c>SIZE "\n"</c> with the target's length, then segments, each either a copy <c>LENGTH "@" OFFSET ","</c> of source
/// bytes or a literal <c>LENGTH ":" BYTES</c>, then a trailer <c>CHECKSUM ";"</c>. Numbers are unsigned 32-bit, written
/// most significant digit first in base 64 with the digits <c>0-9 A-Z _ a-z ~</c>. The checksum is the sum of the
/// target read as big-endian 32-bit words (the last one padded with zero bytes), wrapping at 2^32: the format page says
/// "modulo 2^32-1", but Fossil and the npm <c>fossil-delta</c> package wrap at 2^32, and so do we (checked against
/// the package by the tests). A copy of length 0 copies nothing, as in those implementations (the page says it
/// runs to the end of the source); our encoder never writes one.</para>
/// <para>Guarantees: <see cref="Apply"/> of <see cref="Create"/>'s output gives the target byte for byte; deltas
/// interoperate with other Fossil implementations in both directions; <see cref="Apply"/> reports every malformed or
/// corrupted delta as a <see cref="FormatException"/>, never allocates more than the target size the delta declares, and
/// refuses a declared size over its limit before allocating. Thread-safe (no shared mutable state).</para>
/// </remarks>
public static class FossilDelta
{
    /// <summary>The largest target <see cref="Apply"/> builds unless told otherwise: 16 MiB.</summary>
    public const int DefaultMaxOutputSize = 16 * 1024 * 1024;

    /// <summary>The encoder indexes the source in blocks of this many bytes (the format description's NHASH); a match
    /// shorter than a block can be found only as the extension of a longer one.</summary>
    private const int BlockSize = 16;

    /// <summary>At most this many source blocks with the window's hash are compared per window position, so a source
    /// with many repeated blocks cannot make the encoder quadratic.</summary>
    private const int MaxCandidates = 64;

    /// <summary>Header, the last literal's length and colon, and the trailer: 7 bytes each at most (6 base-64 digits
    /// hold 32 bits, plus the separator), rounded up.</summary>
    private const int FramingBound = 32;

    /// <summary>Multiplier of the polynomial rolling hash over a block (any odd constant with well-mixed bits).</summary>
    private const uint RollMultiplier = 0x01000193;

    /// <summary>Fibonacci hashing: spreads the rolling hash over the table by its top bits.</summary>
    private const uint BucketMultiplier = 0x9E3779B1;

    private const byte SizeEnd = (byte)'\n';
    private const byte CopyCommand = (byte)'@';
    private const byte CopyEnd = (byte)',';
    private const byte LiteralCommand = (byte)':';
    private const byte ChecksumEnd = (byte)';';

    private static ReadOnlySpan<byte> Digits => "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"u8;

    /// <summary>The weight of each byte of a block in its hash: RollMultiplier^(BlockSize-1-k) for byte k.</summary>
    private static readonly uint[] BlockWeights = [.. Enumerable.Range(0, BlockSize).Select(k => Power(RollMultiplier, BlockSize - 1 - k))];

    /// <summary>RollMultiplier^(BlockSize-1): the weight of the byte that leaves the window.</summary>
    private static readonly uint OutgoingWeight = BlockWeights[0];

    /// <summary>Digit value of each byte, or -1 for a byte that is not a base-64 digit.</summary>
    private static readonly sbyte[] DigitValues = BuildDigitValues();

    /// <summary>A delta that rebuilds <paramref name="target"/> from <paramref name="source"/>.</summary>
    public static byte[] Create(ReadOnlySpan<byte> source, ReadOnlySpan<byte> target)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDeltaLength(target));
        try
        {
            return buffer.AsSpan(0, Encode(source, target, buffer)).ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>A delta from <paramref name="source"/> to <paramref name="target"/> when it is smaller than the target
    /// itself; otherwise <see langword="false"/> (send the target whole), and nothing is allocated.</summary>
    public static bool TryCreateSmaller(ReadOnlySpan<byte> source, ReadOnlySpan<byte> target, [NotNullWhen(true)] out byte[]? delta)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDeltaLength(target));
        try
        {
            var length = Encode(source, target, buffer);
            delta = length < target.Length ? buffer.AsSpan(0, length).ToArray() : null;
            return delta is not null;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The target that <paramref name="delta"/> builds from <paramref name="source"/>.</summary>
    /// <param name="maxOutputSize">The largest target accepted; a delta declaring more is refused before anything is
    /// allocated.</param>
    /// <exception cref="FormatException">The delta is malformed, does not fit the source, declares a target over
    /// <paramref name="maxOutputSize"/>, or its checksum does not match what it built.</exception>
    public static byte[] Apply(ReadOnlySpan<byte> source, ReadOnlySpan<byte> delta, int maxOutputSize = DefaultMaxOutputSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxOutputSize);
        var reader = new DeltaReader(delta);
        var declared = reader.ReadNumber("target size");
        reader.Expect(SizeEnd, "the newline after the target size");
        if (declared > (uint)maxOutputSize)
        {
            throw Malformed($"it declares a target of {declared} bytes, over the limit of {maxOutputSize}");
        }

        var size = (int)declared;
        var output = size == 0 ? [] : new byte[size];
        var written = 0;
        while (true)
        {
            var start = reader.Position;
            var number = reader.ReadNumber("a segment length or the checksum");
            switch (reader.ReadCommand())
            {
                case CopyCommand:
                    var offset = reader.ReadNumber("a copy offset");
                    reader.Expect(CopyEnd, "the comma after a copy offset");
                    if (number > (uint)(size - written))
                    {
                        throw Malformed($"the copy at byte {start} runs past the declared target size {size}");
                    }

                    if ((ulong)offset + number > (ulong)source.Length)
                    {
                        throw Malformed($"the copy at byte {start} ({number} bytes from {offset}) runs past the end of the {source.Length}-byte source");
                    }

                    source.Slice((int)offset, (int)number).CopyTo(output.AsSpan(written));
                    written += (int)number;
                    break;

                case LiteralCommand:
                    if (number > (uint)(size - written))
                    {
                        throw Malformed($"the literal at byte {start} runs past the declared target size {size}");
                    }

                    reader.Take((int)number).CopyTo(output.AsSpan(written));
                    written += (int)number;
                    break;

                case ChecksumEnd:
                    if (written != size)
                    {
                        throw Malformed($"it builds {written} bytes but declares {size}");
                    }

                    if (!reader.AtEnd)
                    {
                        throw Malformed($"{delta.Length - reader.Position} bytes follow the trailer");
                    }

                    var actual = Checksum(output);
                    if (actual != number)
                    {
                        throw Malformed($"the checksum of what it built is {actual}, the delta says {number}");
                    }

                    return output;

                default:
                    throw Malformed($"byte {reader.Position - 1} is not '@', ':' or ';'");
            }
        }
    }

    /// <summary>The longest delta <see cref="Encode"/> writes: it writes a copy only where the copy (and the length
    /// of the literal it closes) is shorter than the bytes it replaces, so every segment but the last literal is
    /// shorter than its bytes of target.</summary>
    private static int MaxDeltaLength(ReadOnlySpan<byte> target)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(target.Length, Array.MaxLength - FramingBound, nameof(target));
        return target.Length + FramingBound;
    }

    /// <summary>Writes the delta into <paramref name="output"/> (at least <see cref="MaxDeltaLength"/> long) and returns
    /// its length.</summary>
    /// <remarks>
    /// The source is indexed by the rolling hash of each whole block at a multiple of <see cref="BlockSize"/>. A window
    /// of one block slides over the target from <c>at</c>; <c>done</c> is where the target not yet written starts.
    /// At each position the source blocks with the window's hash are extended forwards and backwards (back to
    /// <c>done</c>) and the longest common run is taken. It is written (as a literal of the bytes before it, then a
    /// copy) when that is shorter than the run, and the window restarts after it; otherwise the window moves one byte.
    /// What remains at the end is one literal.
    /// </remarks>
    private static int Encode(ReadOnlySpan<byte> source, ReadOnlySpan<byte> target, Span<byte> output)
    {
        var written = WriteNumber(output, (uint)target.Length);
        output[written++] = SizeEnd;
        var done = 0;
        var blocks = source.Length / BlockSize;
        if (blocks > 0 && target.Length >= BlockSize)
        {
            var bits = Math.Max(4, 32 - int.LeadingZeroCount(blocks) + 1);
            var heads = ArrayPool<int>.Shared.Rent(1 << bits);
            var chain = ArrayPool<int>.Shared.Rent(blocks);
            try
            {
                var table = new BlockTable(heads.AsSpan(0, 1 << bits), chain.AsSpan(0, blocks), bits);
                table.Index(source);
                written += WriteSegments(source, target, table, output[written..], ref done);
            }
            finally
            {
                ArrayPool<int>.Shared.Return(heads);
                ArrayPool<int>.Shared.Return(chain);
            }
        }

        if (done < target.Length)
        {
            written += WriteLiteral(output[written..], target[done..]);
        }

        written += WriteNumber(output[written..], Checksum(target));
        output[written++] = ChecksumEnd;
        return written;
    }

    private static int WriteSegments(ReadOnlySpan<byte> source, ReadOnlySpan<byte> target, BlockTable table, Span<byte> output, ref int done)
    {
        var written = 0;
        var at = 0;
        var hash = Hash(target[..BlockSize]);
        while (true)
        {
            var (runSource, runTarget, runLength) = LongestRun(source, target, table, hash, at, done);
            if (runLength > 0)
            {
                var gap = runTarget - done;
                var cost = NumberLength((uint)runLength) + NumberLength((uint)runSource) + 2
                    + (gap > 0 ? NumberLength((uint)gap) + 1 : 0);
                if (cost < runLength)
                {
                    if (gap > 0)
                    {
                        written += WriteLiteral(output[written..], target.Slice(done, gap));
                    }

                    written += WriteNumber(output[written..], (uint)runLength);
                    output[written++] = CopyCommand;
                    written += WriteNumber(output[written..], (uint)runSource);
                    output[written++] = CopyEnd;
                    done = at = runTarget + runLength;
                    if (at > target.Length - BlockSize)
                    {
                        return written;
                    }

                    hash = Hash(target.Slice(at, BlockSize));
                    continue;
                }
            }

            if (at + BlockSize >= target.Length)
            {
                return written;
            }

            hash = (hash - target[at] * OutgoingWeight) * RollMultiplier + target[at + BlockSize];
            at++;
        }
    }

    /// <summary>The longest run of bytes the target shares with the source around the window at <paramref name="at"/>,
    /// reaching back no further than <paramref name="done"/>: its start in the source and the target, and its length
    /// (0 when no candidate block shares a byte).</summary>
    private static (int Source, int Target, int Length) LongestRun(
        ReadOnlySpan<byte> source, ReadOnlySpan<byte> target, BlockTable table, uint hash, int at, int done)
    {
        var best = (Source: 0, Target: 0, Length: 0);
        var candidates = 0;
        for (var block = table.First(hash); block >= 0 && candidates < MaxCandidates; block = table.Next(block), candidates++)
        {
            var from = block * BlockSize;
            var forward = source[from..].CommonPrefixLength(target[at..]);
            if (forward == 0)
            {
                continue;
            }

            var reach = Math.Min(from, at - done);
            var backward = 0;
            while (backward < reach && source[from - backward - 1] == target[at - backward - 1])
            {
                backward++;
            }

            if (backward + forward > best.Length)
            {
                best = (from - backward, at - backward, backward + forward);
            }
        }

        return best;
    }

    private static int WriteLiteral(Span<byte> output, ReadOnlySpan<byte> bytes)
    {
        var written = WriteNumber(output, (uint)bytes.Length);
        output[written++] = LiteralCommand;
        bytes.CopyTo(output[written..]);
        return written + bytes.Length;
    }

    private static int NumberLength(uint value)
    {
        var length = 1;
        while ((value >>= 6) != 0)
        {
            length++;
        }

        return length;
    }

    private static int WriteNumber(Span<byte> output, uint value)
    {
        var length = NumberLength(value);
        for (var i = length - 1; i >= 0; i--)
        {
            output[i] = Digits[(int)(value & 63)];
            value >>= 6;
        }

        return length;
    }

    /// <summary>The format's checksum: the sum of the bytes as big-endian 32-bit words, the last padded with zeros,
    /// wrapping at 2^32.</summary>
    private static uint Checksum(ReadOnlySpan<byte> bytes)
    {
        uint sum = 0;
        var whole = bytes.Length & ~7;
        for (var i = 0; i < whole; i += 8)
        {
            var pair = BinaryPrimitives.ReadUInt64BigEndian(bytes[i..]);
            sum += (uint)(pair >> 32) + (uint)pair;
        }

        Span<byte> last = stackalloc byte[8];
        last.Clear();
        bytes[whole..].CopyTo(last);
        return sum + BinaryPrimitives.ReadUInt32BigEndian(last) + BinaryPrimitives.ReadUInt32BigEndian(last[4..]);
    }

    /// <summary>The rolling hash of one block: the sum of byte k times RollMultiplier^(BlockSize-1-k), wrapping at
    /// 2^32 (what the window's rolling update keeps). Computed as one vector dot product with the weights (Vector128
    /// falls back to scalar code where it is not accelerated): measured with tests/FossilBench on a 2 KB state, a delta
    /// took 3.1 µs of CPU with Horner's rule (16 dependent multiplications per block) or a scalar dot product, 2.2
    /// with this.</summary>
    private static uint Hash(ReadOnlySpan<byte> block)
    {
        var (low, high) = Vector128.Widen(Vector128.Create(block[..BlockSize]));
        var (w0, w1) = Vector128.Widen(low);
        var (w2, w3) = Vector128.Widen(high);
        ReadOnlySpan<uint> weights = BlockWeights;
        return Vector128.Sum((w0 * Vector128.Create(weights[..4])) + (w1 * Vector128.Create(weights[4..8]))
            + (w2 * Vector128.Create(weights[8..12])) + (w3 * Vector128.Create(weights[12..])));
    }

    private static uint Power(uint value, int exponent)
    {
        uint result = 1;
        for (var i = 0; i < exponent; i++)
        {
            result *= value;
        }

        return result;
    }

    private static sbyte[] BuildDigitValues()
    {
        var values = new sbyte[256];
        Array.Fill(values, (sbyte)-1);
        for (var i = 0; i < Digits.Length; i++)
        {
            values[Digits[i]] = (sbyte)i;
        }

        return values;
    }

    private static FormatException Malformed(string why) => new("Malformed Fossil delta: " + why + ".");

    /// <summary>Source blocks by rolling hash: <c>heads[bucket]</c> is 1 + the last block indexed in the bucket (0:
    /// none), <c>chain[block]</c> 1 + the block indexed before it in the same bucket.</summary>
    private readonly ref struct BlockTable(Span<int> heads, Span<int> chain, int bits)
    {
        private readonly Span<int> _heads = heads;
        private readonly Span<int> _chain = chain;
        private readonly int _shift = 32 - bits;

        public void Index(ReadOnlySpan<byte> source)
        {
            _heads.Clear();
            for (var block = 0; block < _chain.Length; block++)
            {
                ref var head = ref _heads[Bucket(Hash(source.Slice(block * BlockSize, BlockSize)))];
                _chain[block] = head;
                head = block + 1;
            }
        }

        /// <summary>The last block indexed with this hash's bucket, or -1.</summary>
        public int First(uint hash) => _heads[Bucket(hash)] - 1;

        /// <summary>The block indexed before <paramref name="block"/> in its bucket, or -1.</summary>
        public int Next(int block) => _chain[block] - 1;

        private int Bucket(uint hash) => (int)((hash * BucketMultiplier) >> _shift);
    }

    /// <summary>Reads a delta front to back; every read past its end or of an unexpected byte is a
    /// <see cref="FormatException"/>.</summary>
    private ref struct DeltaReader(ReadOnlySpan<byte> delta)
    {
        /// <summary>Six base-64 digits hold 36 bits: more is never a 32-bit number.</summary>
        private const int MaxDigits = 6;

        private readonly ReadOnlySpan<byte> _delta = delta;

        public int Position { get; private set; }

        public readonly bool AtEnd => Position == _delta.Length;

        public uint ReadNumber(string what)
        {
            var start = Position;
            ulong value = 0;
            int digit;
            while (Position < _delta.Length && (digit = DigitValues[_delta[Position]]) >= 0)
            {
                if (Position - start == MaxDigits)
                {
                    throw Malformed($"{what} at byte {start} has more than {MaxDigits} digits");
                }

                value = value * 64 + (uint)digit;
                Position++;
            }

            if (Position == start)
            {
                throw Malformed(AtEnd ? $"it ends where {what} should be" : $"byte {start} should begin {what}");
            }

            return value <= uint.MaxValue ? (uint)value : throw Malformed($"{what} at byte {start} is over 32 bits");
        }

        public int ReadCommand() => AtEnd ? throw Malformed("it ends inside a segment") : _delta[Position++];

        public void Expect(byte expected, string what)
        {
            if (AtEnd || _delta[Position] != expected)
            {
                throw Malformed(AtEnd ? $"it ends where {what} should be" : $"byte {Position} should be {what}");
            }

            Position++;
        }

        public ReadOnlySpan<byte> Take(int length)
        {
            if (length > _delta.Length - Position)
            {
                throw Malformed($"a literal of {length} bytes at byte {Position} runs past its end");
            }

            var bytes = _delta.Slice(Position, length);
            Position += length;
            return bytes;
        }
    }
}
