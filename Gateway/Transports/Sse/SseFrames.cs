using System.Buffers;
using System.Text.Json;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Sse;

/// <summary>
/// The events of a Server-Sent Events stream. Each is the event's lines without its <c>id:</c> line and the blank line
/// that ends it: the id is the stream's own position (see <see cref="SseConnection"/>), so the connection appends it.
/// </summary>
internal static class SseFrames
{
    /// <summary>A default event (no <c>event:</c> line, so a browser's <c>EventSource.onmessage</c> receives it) with the
    /// raw protocol's <c>msg</c> object as data: built once per message and shared by every SSE subscriber.</summary>
    public static readonly WireForm<byte[]> Message = new MessageForm();

    /// <summary>A comment line that keeps proxies from closing an idle stream.</summary>
    public static readonly byte[] Ping = ": ping\n\n"u8.ToArray();

    /// <summary><c>event: subscribed</c>: the topic's position when the stream joined it; on a resume,
    /// <c>recovered</c> says whether every missed message was replayed (false: a gap that cannot be filled).</summary>
    public static byte[] Subscribed(string topic, SubscribeResult result) => Event("subscribed"u8, w =>
    {
        w.WriteString("topic"u8, topic);
        w.WriteString("epoch"u8, result.Epoch);
        w.WriteNumber("seq"u8, result.Seq);
        if (result.Recovered is { } recovered)
        {
            w.WriteBoolean("recovered"u8, recovered);
        }
    }, end: false);

    /// <summary><c>event: bye</c>: the server ends the stream; reconnect (with the last event id) and resume.</summary>
    public static byte[] Bye(string code) => Event("bye"u8, w =>
    {
        w.WriteString("code"u8, code);
        w.WriteBoolean("reconnect"u8, true);
    }, end: true);

    private static byte[] Event(ReadOnlySpan<byte> name, Action<Utf8JsonWriter> body, bool end)
    {
        var json = new ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }

        var output = new ArrayBufferWriter<byte>(json.WrittenCount + 32);
        WriteEvent(output, name, json.WrittenSpan);
        if (end)
        {
            output.Write("\n"u8);
        }

        return output.WrittenSpan.ToArray();
    }

    /// <summary>Writes <c>event: name</c> (none for a default event, when <paramref name="name"/> is empty) and the data
    /// lines. JSON holds line breaks only in whitespace (a string
    /// cannot), so a break becomes a new <c>data:</c> line, which the client's EventSource joins back with LF.</summary>
    private static void WriteEvent(IBufferWriter<byte> output, ReadOnlySpan<byte> name, ReadOnlySpan<byte> json)
    {
        if (!name.IsEmpty)
        {
            output.Write("event: "u8);
            output.Write(name);
            output.Write("\n"u8);
        }

        output.Write("data: "u8);
        while (json.IndexOfAny((byte)'\r', (byte)'\n') is var i and >= 0)
        {
            output.Write(json[..i]);
            output.Write("\ndata: "u8);
            json = json[i] == '\r' && i + 1 < json.Length && json[i + 1] == '\n' ? json[(i + 2)..] : json[(i + 1)..];
        }

        output.Write(json);
        output.Write("\n"u8);
    }

    private sealed class MessageForm : WireForm<byte[]>
    {
        [ThreadStatic]
        private static ArrayBufferWriter<byte>? _json;

        [ThreadStatic]
        private static ArrayBufferWriter<byte>? _event;

        public override byte[] Encode(TopicMessage m)
        {
            var json = _json ??= new ArrayBufferWriter<byte>(1024);
            json.ResetWrittenCount();
            using (var w = new Utf8JsonWriter(json, new JsonWriterOptions { SkipValidation = true }))
            {
                MessageJson.Write(w, m);
            }

            var output = _event ??= new ArrayBufferWriter<byte>(1024);
            output.ResetWrittenCount();
            WriteEvent(output, [], json.WrittenSpan);
            return output.WrittenSpan.ToArray();
        }
    }
}
