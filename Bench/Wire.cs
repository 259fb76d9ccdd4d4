using System.Buffers.Text;
using System.Diagnostics;
using System.Text;

namespace OrleansPush.Bench;

/// <summary>The bits of the wire protocol the benchmark writes and reads. Parsing is deliberately minimal (span
/// searches, no JSON DOM): the loader shares the two cores with the servers it measures.</summary>
internal static class Wire
{
    public const string SubProtocol = "orleanspush.v1.json";
    private static readonly byte[] _seqKey = "\"seq\":"u8.ToArray();
    private static readonly byte[] _tKey = "\"t\":"u8.ToArray();
    private static readonly byte[] _epochKey = "\"epoch\":\""u8.ToArray();
    private static readonly byte[] _idKey = "\"id\":"u8.ToArray();
    private static readonly byte[] _recoveredTrue = "\"recovered\":true"u8.ToArray();
    private static readonly string _pad = new('x', 72);

    /// <summary>About 100 bytes: <c>{"t":&lt;Stopwatch timestamp&gt;,"pad":"xxx…"}</c>.</summary>
    public static byte[] Payload(long timestamp) => Encoding.UTF8.GetBytes($"{{\"t\":{timestamp},\"pad\":\"{_pad}\"}}");

    public static byte[] Sub(int id, string topic, string? sinceEpoch = null, long sinceSeq = 0, bool delta = false) => Encoding.UTF8.GetBytes(
        (sinceEpoch is null
            ? $"{{\"op\":\"sub\",\"id\":{id},\"topic\":\"{topic}\""
            : $"{{\"op\":\"sub\",\"id\":{id},\"topic\":\"{topic}\",\"since\":{{\"epoch\":\"{sinceEpoch}\",\"seq\":{sinceSeq}}}")
        + (delta ? ",\"delta\":\"fossil\"}" : "}"));

    public static bool IsMsg(ReadOnlySpan<byte> frame) => frame.StartsWith("{\"op\":\"msg\""u8);

    public static bool IsOk(ReadOnlySpan<byte> frame) => frame.StartsWith("{\"op\":\"ok\""u8);

    public static bool IsRecovered(ReadOnlySpan<byte> frame) => frame.IndexOf(_recoveredTrue) >= 0;

    /// <summary>Reads the first <c>"seq":N</c> of a frame (the envelope's, which precedes <c>data</c>).</summary>
    public static long Seq(ReadOnlySpan<byte> frame) => Number(frame, _seqKey);

    public static long Id(ReadOnlySpan<byte> frame) => Number(frame, _idKey);

    /// <summary>The payload's send timestamp: the last <c>"t":</c> of the frame (inside <c>data</c>).</summary>
    public static long SentAt(ReadOnlySpan<byte> frame)
    {
        var i = frame.LastIndexOf(_tKey);
        return i < 0 ? -1 : ParseAt(frame[(i + _tKey.Length)..]);
    }

    public static string? Epoch(ReadOnlySpan<byte> frame)
    {
        var i = frame.IndexOf(_epochKey);
        if (i < 0)
        {
            return null;
        }

        var rest = frame[(i + _epochKey.Length)..];
        var end = rest.IndexOf((byte)'"');
        return end < 0 ? null : Encoding.UTF8.GetString(rest[..end]);
    }

    private static long Number(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> key)
    {
        var i = frame.IndexOf(key);
        return i < 0 ? -1 : ParseAt(frame[(i + key.Length)..]);
    }

    private static long ParseAt(ReadOnlySpan<byte> s) => Utf8Parser.TryParse(s, out long value, out _) ? value : -1;

    public static double MicrosSince(long timestamp) => (Stopwatch.GetTimestamp() - timestamp) * 1_000_000.0 / Stopwatch.Frequency;
}
