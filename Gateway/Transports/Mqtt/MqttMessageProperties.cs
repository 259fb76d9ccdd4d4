using System.Buffers.Binary;
using System.Text;
using MQTTnet;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>
/// The MQTT 5 message properties a message carries through the cluster (<see cref="TopicMessage.Properties"/>): encoded
/// once by the gateway that took the PUBLISH (or the will), kept with the message in history, and decoded once per message
/// by each gateway that has MQTT subscribers for it. A message with none of them has no properties at all (null).
/// <para>Encoding: entries one after another, each a one-byte id and its value, with MQTT 5's property ids (§2.2.2.2):
/// 0x01 payload format indicator (one byte), 0x02 message expiry interval (four bytes, big endian), 0x03 content type and
/// 0x08 response topic (a string: two-byte length, UTF-8), 0x09 correlation data (two-byte length, bytes), 0x26 a user
/// property (two strings), in the order the publisher gave them. Ids of ours, outside MQTT's range: 0xF0 the publisher's
/// client id, written only when the publisher itself has a no-local subscription matching the topic (so that its
/// gateway can leave the message out for it); 0xF1 the QoS of the PUBLISH (one byte) when below 2, since no subscriber
/// gets a message at a higher QoS than it was published with (§3.8.4), a message published without MQTT (or at QoS 2)
/// goes at each subscription's QoS; 0xF2 (no value) the PUBLISH had the retain flag (for retain as published, §3.8.3.1).</para>
/// </summary>
internal sealed class MqttMessageProperties
{
    private const byte PayloadFormatId = 0x01;
    private const byte ExpiryId = 0x02;
    private const byte ContentTypeId = 0x03;
    private const byte ResponseTopicId = 0x08;
    private const byte CorrelationDataId = 0x09;
    private const byte UserPropertyId = 0x26;
    private const byte OriginId = 0xF0;
    private const byte QosId = 0xF1;
    private const byte RetainedId = 0xF2;

    public MqttPayloadFormatIndicator PayloadFormat { get; private init; }

    /// <summary>Seconds; 0 when the message does not expire.</summary>
    public uint ExpiryInterval { get; private init; }

    public string? ContentType { get; private init; }

    public string? ResponseTopic { get; private init; }

    public byte[]? CorrelationData { get; private init; }

    public List<MqttUserProperty>? UserProperties { get; private init; }

    /// <summary>The client id of the publisher when it has a no-local subscription that matches the topic.</summary>
    public string? Origin { get; private init; }

    /// <summary>The PUBLISH had the retain flag.</summary>
    public bool Retained { get; private init; }

    /// <summary>The highest QoS the message is delivered at: the QoS it was published with.</summary>
    public MqttQualityOfServiceLevel MaxQos { get; private init; } = MqttQualityOfServiceLevel.ExactlyOnce;

    /// <summary>The properties of <paramref name="message"/> (a PUBLISH or a will), with <paramref name="origin"/> when
    /// given; null when there are none.</summary>
    public static byte[]? Encode(MqttApplicationMessage message, string? origin)
    {
        var users = message.UserProperties is { Count: > 0 } u ? u : null;
        var format = message.PayloadFormatIndicator == MqttPayloadFormatIndicator.CharacterData;
        var qos = message.QualityOfServiceLevel != MqttQualityOfServiceLevel.ExactlyOnce;
        if (!format && !qos && !message.Retain && message.MessageExpiryInterval == 0 && message.ContentType is null && message.ResponseTopic is null
            && message.CorrelationData is null && users is null && origin is null)
        {
            return null;
        }

        var size = (format ? 2 : 0) + (qos ? 2 : 0) + (message.Retain ? 1 : 0) + (message.MessageExpiryInterval > 0 ? 5 : 0) + StringSize(message.ContentType)
            + StringSize(message.ResponseTopic) + (message.CorrelationData is { } c ? 3 + c.Length : 0) + StringSize(origin);
        foreach (var p in users ?? [])
        {
            size += 1 + 2 + Encoding.UTF8.GetByteCount(p.Name) + 2 + p.ValueBuffer.Length;
        }

        var bytes = new byte[size];
        var at = 0;
        if (format)
        {
            bytes[at++] = PayloadFormatId;
            bytes[at++] = 1;
        }

        if (message.MessageExpiryInterval > 0)
        {
            bytes[at++] = ExpiryId;
            BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(at), message.MessageExpiryInterval);
            at += 4;
        }

        at = WriteString(bytes, at, ContentTypeId, message.ContentType);
        at = WriteString(bytes, at, ResponseTopicId, message.ResponseTopic);
        if (message.CorrelationData is { } correlation)
        {
            bytes[at++] = CorrelationDataId;
            at = WriteBytes(bytes, at, correlation);
        }

        foreach (var p in users ?? [])
        {
            bytes[at++] = UserPropertyId;
            at = WriteBytes(bytes, at, Encoding.UTF8.GetBytes(p.Name));
            at = WriteBytes(bytes, at, p.ValueBuffer.Span);
        }

        at = WriteString(bytes, at, OriginId, origin);
        if (qos)
        {
            bytes[at++] = QosId;
            bytes[at++] = (byte)message.QualityOfServiceLevel;
        }

        if (message.Retain)
        {
            bytes[at] = RetainedId;
        }

        return bytes;
    }

    /// <summary>Reads what <see cref="Encode"/> wrote; null for null.</summary>
    /// <exception cref="FormatException">The bytes are not such an encoding.</exception>
    public static MqttMessageProperties? Decode(byte[]? bytes)
    {
        if (bytes is null)
        {
            return null;
        }

        var format = MqttPayloadFormatIndicator.Unspecified;
        var maxQos = MqttQualityOfServiceLevel.ExactlyOnce;
        var retained = false;
        uint expiry = 0;
        string? contentType = null, responseTopic = null, origin = null;
        byte[]? correlation = null;
        List<MqttUserProperty>? users = null;
        var span = bytes.AsSpan();
        var at = 0;
        try
        {
            while (at < span.Length)
            {
                switch (span[at++])
                {
                    case PayloadFormatId:
                        format = (MqttPayloadFormatIndicator)span[at++];
                        break;
                    case ExpiryId:
                        expiry = BinaryPrimitives.ReadUInt32BigEndian(span[at..]);
                        at += 4;
                        break;
                    case ContentTypeId:
                        contentType = Encoding.UTF8.GetString(ReadBytes(span, ref at));
                        break;
                    case ResponseTopicId:
                        responseTopic = Encoding.UTF8.GetString(ReadBytes(span, ref at));
                        break;
                    case CorrelationDataId:
                        correlation = ReadBytes(span, ref at).ToArray();
                        break;
                    case UserPropertyId:
                        var name = Encoding.UTF8.GetString(ReadBytes(span, ref at));
                        (users ??= []).Add(new MqttUserProperty(name, ReadBytes(span, ref at).ToArray()));
                        break;
                    case OriginId:
                        origin = Encoding.UTF8.GetString(ReadBytes(span, ref at));
                        break;
                    case QosId:
                        maxQos = (MqttQualityOfServiceLevel)span[at++];
                        break;
                    case RetainedId:
                        retained = true;
                        break;
                    default:
                        throw new FormatException($"Unknown message property id 0x{span[at - 1]:X2}.");
                }
            }
        }
        catch (Exception ex) when (ex is ArgumentOutOfRangeException or IndexOutOfRangeException)
        {
            throw new FormatException("Truncated message properties.", ex);
        }

        return new MqttMessageProperties
        {
            PayloadFormat = format,
            ExpiryInterval = expiry,
            ContentType = contentType,
            ResponseTopic = responseTopic,
            CorrelationData = correlation,
            UserProperties = users,
            Origin = origin,
            MaxQos = maxQos,
            Retained = retained,
        };
    }

    private static int StringSize(string? value) => value is null ? 0 : 3 + Encoding.UTF8.GetByteCount(value);

    private static int WriteString(byte[] bytes, int at, byte id, string? value)
    {
        if (value is null)
        {
            return at;
        }

        bytes[at++] = id;
        return WriteBytes(bytes, at, Encoding.UTF8.GetBytes(value));
    }

    private static int WriteBytes(byte[] bytes, int at, ReadOnlySpan<byte> value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(at), checked((ushort)value.Length));
        value.CopyTo(bytes.AsSpan(at + 2));
        return at + 2 + value.Length;
    }

    private static ReadOnlySpan<byte> ReadBytes(ReadOnlySpan<byte> span, ref int at)
    {
        var length = BinaryPrimitives.ReadUInt16BigEndian(span[at..]);
        var value = span.Slice(at + 2, length);
        at += 2 + length;
        return value;
    }
}
