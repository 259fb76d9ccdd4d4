using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.WebSockets;

/// <summary>The server frames of the raw protocol (DESIGN.md "Raw WebSocket protocol"), one JSON object each.</summary>
internal static class WsFrames
{
    public const string SubProtocol = "orleanspush.v1.json";

    /// <summary>The <c>msg</c> frame: built once per message and shared by every raw-WebSocket subscriber.</summary>
    public static readonly WireForm<byte[]> Message = new MessageForm();

    /// <summary>The one delta codec there is: <c>{"op":"sub",..,"delta":"fossil"}</c>.</summary>
    public const string FossilCodec = "fossil";

    /// <summary>The <c>msg</c> frame of a delta subscription sent whole: the payload as a JSON string,
    /// <c>{"op":"msg",..,"text":"&lt;the publisher's JSON&gt;"}</c>, so the client holds its exact bytes.</summary>
    public static readonly WireForm<byte[]> TextMessage = new TextForm();

    /// <summary>The <c>msg</c> frame of a delta subscription that holds seq − 1: <c>{"op":"msg",..,"delta":".."}</c>
    /// with the Fossil delta from the previous message's bytes, each byte as the character of the same code; or the
    /// <see cref="TextMessage"/> frame when that is not larger, or there is no previous message. Computed once per
    /// message, whatever the number of subscribers.</summary>
    public static readonly WireForm<byte[]> DeltaMessage = new DeltaForm();

    /// <summary><c>{"op":"ok",...}</c>; a refresh lists the subscriptions the new token ended (<c>unsubscribed</c>).</summary>
    /// <param name="delta">The subscription's delta codec, when the namespace granted the one asked for.</param>
    public static byte[] Ok(long? id, SubscribeResult? result = null, TopicPosition? published = null, string[]? unsubscribed = null, string? delta = null) => Write(w =>
    {
        w.WriteString("op"u8, "ok"u8);
        WriteId(w, id);
        if (unsubscribed is { Length: > 0 })
        {
            w.WriteStartArray("unsubscribed"u8);
            foreach (var topic in unsubscribed)
            {
                w.WriteStringValue(topic);
            }

            w.WriteEndArray();
        }

        if (result is not null)
        {
            w.WriteString("epoch"u8, result.Epoch);
            w.WriteNumber("seq"u8, result.Seq);
            if (result.Recovered is { } recovered)
            {
                w.WriteBoolean("recovered"u8, recovered);
            }

            if (delta is not null)
            {
                w.WriteString("delta"u8, delta);
            }
        }
        else if (published is not null)
        {
            w.WriteString("epoch"u8, published.Epoch);
            w.WriteNumber("seq"u8, published.Seq);
        }
    });

    public static byte[] Error(long? id, string code, string message) => Write(w =>
    {
        w.WriteString("op"u8, "error"u8);
        WriteId(w, id);
        w.WriteString("code"u8, code);
        w.WriteString("message"u8, message);
    });

    /// <summary><c>{"op":"join"|"leave","topic":..,"user":..}</c>.</summary>
    public static byte[] Presence(PresenceChanged change) => Write(w =>
    {
        w.WriteString("op"u8, change.Joined ? "join"u8 : "leave"u8);
        w.WriteString("topic"u8, change.Topic);
        w.WriteString("user"u8, change.UserId);
    });

    /// <summary><c>{"op":"reset","topic":..,"code":..}</c>: the subscription ended; subscribe again with <c>since</c>.</summary>
    public static byte[] Reset(string topic, string code) => Write(w =>
    {
        w.WriteString("op"u8, "reset"u8);
        w.WriteString("topic"u8, topic);
        w.WriteString("code"u8, code);
    });

    public static byte[] Bye(string code, bool reconnect) => Write(w =>
    {
        w.WriteString("op"u8, "bye"u8);
        w.WriteString("code"u8, code);
        w.WriteBoolean("reconnect"u8, reconnect);
    });

    private static void WriteId(Utf8JsonWriter w, long? id)
    {
        if (id is { } value)
        {
            w.WriteNumber("id"u8, value);
        }
    }

    private static byte[] Write(Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private sealed class MessageForm : WireForm<byte[]>
    {
        [ThreadStatic]
        private static ArrayBufferWriter<byte>? _buffer;

        public override byte[] Encode(TopicMessage m)
        {
            var buffer = _buffer ??= new ArrayBufferWriter<byte>(1024);
            buffer.ResetWrittenCount();
            using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true }))
            {
                MessageJson.Write(w, m);
            }

            return buffer.WrittenSpan.ToArray();
        }
    }

    /// <summary>Writes <c>{"op":"msg","topic":..,"epoch":..,"seq":..,</c> and one string property.</summary>
    private static byte[] WriteStringMessage(TopicMessage m, ReadOnlySpan<byte> name, ReadOnlySpan<byte> utf8Value)
    {
        var buffer = new ArrayBufferWriter<byte>(utf8Value.Length + m.Topic.Length + 64);
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("op"u8, "msg"u8);
            w.WriteString("topic"u8, m.Topic);
            w.WriteString("epoch"u8, m.Epoch);
            w.WriteNumber("seq"u8, m.Seq);
            w.WriteString(name, utf8Value);
            w.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private sealed class TextForm : WireForm<byte[]>
    {
        /// <summary>Throws for a payload that is not UTF-8 text (binary payloads are never sent in this form).</summary>
        public override byte[] Encode(TopicMessage m) => WriteStringMessage(m, "text"u8, m.Data);
    }

    private sealed class DeltaForm : WireForm<byte[]>
    {
        public override byte[] Encode(TopicMessage message) => throw new InvalidOperationException("A delta needs the previous message.");

        public override byte[] Encode(OutboundMessage outbound)
        {
            var text = outbound.Encoded(TextMessage);
            if (outbound.Previous is not { Format: PayloadFormat.Json } previous
                || !OrleansPush.Client.FossilDelta.TryCreateSmaller(previous.Data, outbound.Message.Data, out var delta))
            {
                return text;
            }

            // Bytes 0x80-0xFF become two UTF-8 bytes (and a few control bytes an escape), so the frame is compared
            // as written, not the delta's length.
            var frame = WriteStringMessage(outbound.Message, "delta"u8, Encoding.UTF8.GetBytes(Encoding.Latin1.GetString(delta)));
            return frame.Length < text.Length ? frame : text;
        }
    }
}

/// <summary>A parsed client frame.</summary>
internal readonly record struct WsRequest(string Op, long? Id, string? Topic, Since? Since, int Last, ReadOnlyMemory<byte> Data, bool Presence = false, string? Token = null, string? Delta = null);

internal static class WsRequestParser
{
    /// <summary>Parses one client frame. On failure returns false with the request id when it could be read, so the
    /// error can name the request it answers.</summary>
    public static bool TryParse(ReadOnlyMemory<byte> frame, out WsRequest request, out long? id, out string error)
    {
        request = default;
        id = null;
        string? op = null, topic = null, epoch = null;
        long? seq = null;
        int last = 0;
        var hasSince = false;
        var presence = false;
        string? token = null;
        string? delta = null;
        ReadOnlyMemory<byte> data = default;
        try
        {
            var reader = new Utf8JsonReader(frame.Span, new JsonReaderOptions { MaxDepth = 64 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                error = "A frame is one JSON object.";
                return false;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("op"u8))
                {
                    reader.Read();
                    op = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                }
                else if (reader.ValueTextEquals("id"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var value))
                    {
                        error = "\"id\" must be an integer.";
                        return false;
                    }

                    id = value;
                }
                else if (reader.ValueTextEquals("topic"u8))
                {
                    reader.Read();
                    topic = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                }
                else if (reader.ValueTextEquals("last"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt32(out last) || last < 0)
                    {
                        error = "\"last\" must be a non-negative integer.";
                        return false;
                    }
                }
                else if (reader.ValueTextEquals("since"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.StartObject)
                    {
                        error = "\"since\" must be an object {\"epoch\":..,\"seq\":..}.";
                        return false;
                    }

                    hasSince = true;
                    while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                    {
                        if (reader.ValueTextEquals("epoch"u8))
                        {
                            reader.Read();
                            epoch = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                        }
                        else if (reader.ValueTextEquals("seq"u8))
                        {
                            reader.Read();
                            seq = reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var s) && s >= 0 ? s : null;
                        }
                        else
                        {
                            reader.Read();
                            reader.Skip();
                        }
                    }
                }
                else if (reader.ValueTextEquals("presence"u8))
                {
                    reader.Read();
                    if (reader.TokenType is not (JsonTokenType.True or JsonTokenType.False))
                    {
                        error = "\"presence\" must be true or false.";
                        return false;
                    }

                    presence = reader.TokenType == JsonTokenType.True;
                }
                else if (reader.ValueTextEquals("delta"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String || !reader.ValueTextEquals("fossil"u8))
                    {
                        error = "\"delta\" must be \"fossil\".";
                        return false;
                    }

                    delta = WsFrames.FossilCodec;
                }
                else if (reader.ValueTextEquals("token"u8))
                {
                    reader.Read();
                    token = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                }
                else if (reader.ValueTextEquals("data"u8))
                {
                    reader.Read();
                    var start = (int)reader.TokenStartIndex;
                    reader.Skip();
                    data = frame[start..(int)reader.BytesConsumed];
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }

            if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
            {
                error = "A frame is one JSON object.";
                return false;
            }
        }
        catch (JsonException)
        {
            error = "The frame is not valid JSON.";
            return false;
        }

        if (op is null)
        {
            error = "\"op\" is missing.";
            return false;
        }

        if (hasSince && (epoch is null || seq is null))
        {
            error = "\"since\" needs a string \"epoch\" and a non-negative integer \"seq\".";
            return false;
        }

        request = new WsRequest(op, id, topic, hasSince ? new Since(epoch!, seq!.Value) : null, last, data, presence, token, delta);
        error = string.Empty;
        return true;
    }
}
