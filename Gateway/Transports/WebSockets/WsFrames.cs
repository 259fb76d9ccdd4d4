using System.Buffers;
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

    /// <summary><c>{"op":"ok",...}</c>; a refresh lists the subscriptions the new token ended (<c>unsubscribed</c>).</summary>
    public static byte[] Ok(long? id, SubscribeResult? result = null, TopicPosition? published = null, string[]? unsubscribed = null) => Write(w =>
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
}

/// <summary>A parsed client frame.</summary>
internal readonly record struct WsRequest(string Op, long? Id, string? Topic, Since? Since, int Last, ReadOnlyMemory<byte> Data, bool Presence = false, string? Token = null);

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

        request = new WsRequest(op, id, topic, hasSince ? new Since(epoch!, seq!.Value) : null, last, data, presence, token);
        error = string.Empty;
        return true;
    }
}
