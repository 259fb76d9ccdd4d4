using System.Text.Json;

namespace OrleansPush.Gateway.Connections;

/// <summary>The JSON form of a message that the raw WebSocket, SSE and long-polling transports share:
/// <c>{"op":"msg","topic":..,"epoch":..,"seq":..,"data":&lt;the publisher's JSON, byte for byte&gt;}</c>, or for a binary
/// payload <c>"data_b64":"&lt;its bytes in base64&gt;"</c> in place of <c>data</c>.
/// <para>A JSON payload is checked to be one JSON value as it is copied (once per message and wire form): a payload that is
/// not throws rather than produce a frame the client cannot parse, and the fan-out tells those connections.</para></summary>
public static class MessageJson
{
    /// <summary>Writes the message object; <paramref name="withOp"/> adds the raw protocol's <c>"op":"msg"</c>.</summary>
    public static void Write(Utf8JsonWriter writer, TopicMessage message, bool withOp = true)
    {
        writer.WriteStartObject();
        if (withOp)
        {
            writer.WriteString("op"u8, "msg"u8);
        }

        writer.WriteString("topic"u8, message.Topic);
        writer.WriteString("epoch"u8, message.Epoch);
        writer.WriteNumber("seq"u8, message.Seq);
        if (message.Format == PayloadFormat.Binary)
        {
            writer.WriteBase64String(BinaryData, message.Data);
        }
        else
        {
            writer.WritePropertyName(JsonData);
            writer.WriteRawValue(message.Data, skipInputValidation: false);
        }

        writer.WriteEndObject();
    }

    /// <summary>The property that carries a JSON payload as is.</summary>
    public static ReadOnlySpan<byte> JsonData => "data"u8;

    /// <summary>The property that carries a binary payload, base64-encoded.</summary>
    public static ReadOnlySpan<byte> BinaryData => "data_b64"u8;
}
