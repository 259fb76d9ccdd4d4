using System.Text.Json;

namespace OrleansPush.Client;

/// <summary>A position in a topic: <see cref="Seq"/> within <see cref="Epoch"/> (a new epoch means the topic's history
/// was lost).</summary>
public sealed record PushPosition(string Epoch, long Seq);

/// <summary>A message pushed to a subscriber. <see cref="RawData"/> is the publisher's JSON, byte for byte.</summary>
public sealed class PushMessage
{
    private JsonElement? _data;

    public PushMessage(string topic, string epoch, long seq, ReadOnlyMemory<byte> rawData)
        : this(topic, epoch, seq, rawData, isBinary: false)
    {
    }

    public PushMessage(string topic, string epoch, long seq, ReadOnlyMemory<byte> rawData, bool isBinary)
    {
        Topic = topic;
        Epoch = epoch;
        Seq = seq;
        RawData = rawData;
        IsBinary = isBinary;
    }

    public string Topic { get; }

    public string Epoch { get; }

    public long Seq { get; }

    /// <summary>The payload exactly as published: the publisher's JSON (UTF-8), or when <see cref="IsBinary"/> its bytes.</summary>
    public ReadOnlyMemory<byte> RawData { get; }

    /// <summary>The message was published as binary (any bytes, in <see cref="RawData"/>), not as one JSON value.</summary>
    public bool IsBinary { get; }

    /// <summary>The data as a JSON element (parsed on first use).</summary>
    /// <exception cref="InvalidOperationException">The message is binary (<see cref="IsBinary"/>): read <see cref="RawData"/>.</exception>
    public JsonElement Data => _data ??= JsonDocument.Parse(JsonBytes).RootElement.Clone();

    /// <exception cref="InvalidOperationException">The message is binary (<see cref="IsBinary"/>): read <see cref="RawData"/>.</exception>
    public T? Deserialize<T>(JsonSerializerOptions? options = null) => JsonSerializer.Deserialize<T>(JsonBytes.Span, options);

    private ReadOnlyMemory<byte> JsonBytes => IsBinary
        ? throw new InvalidOperationException($"{this} is a binary message, not JSON: read its bytes from RawData.")
        : RawData;

    public override string ToString() => $"{Topic}#{Seq}@{Epoch}";
}

/// <summary>A gap the client could not fill: messages of <see cref="Topic"/> after <see cref="LastSeen"/> up to
/// <see cref="Now"/> are lost (history no longer reaches back that far, or the topic's history was lost and a new
/// epoch began). Delivery goes on from <see cref="Now"/>; the application may want to reload its state.</summary>
public sealed record RecoveryFailure(string Topic, PushPosition? LastSeen, PushPosition Now);

/// <summary>A request refused by the server, or a failure to reach it. <see cref="Code"/> is one of the protocol's
/// codes: <c>bad_request</c>, <c>bad_topic</c>, <c>unauthorized</c>, <c>forbidden</c>, <c>too_large</c>,
/// <c>rate_limited</c>, <c>unavailable</c>.</summary>
public sealed class PushException : Exception
{
    public PushException()
        : this("unavailable", "The request failed.")
    {
    }

    public PushException(string message)
        : this("unavailable", message)
    {
    }

    public PushException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = "unavailable";
    }

    public PushException(string code, string message, int? status = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
        Status = status;
    }

    public string Code { get; }

    /// <summary>The HTTP status, for a refusal of the HTTP API.</summary>
    public int? Status { get; }
}

public enum PushConnectionState
{
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
}
