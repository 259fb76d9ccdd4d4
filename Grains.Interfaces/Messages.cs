namespace OrleansPush;

/// <summary>A topic's position: <see cref="Seq"/> counts messages from 1 within <see cref="Epoch"/>; a new epoch means
/// the topic's history was lost and older positions cannot be resumed.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicPosition")]
public sealed record TopicPosition([property: Id(0)] string Epoch, [property: Id(1)] long Seq);

/// <summary>What a gateway receives on its own stream. Frozen: never reorder or reuse ids.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.GatewayEvent")]
public abstract record GatewayEvent;

/// <summary>One sequenced message. <see cref="Data"/> is the publisher's payload, byte for byte: one UTF-8 JSON value
/// when <see cref="Format"/> is <see cref="PayloadFormat.Json"/> (the default),
/// any bytes when it is <see cref="PayloadFormat.Binary"/>. <see cref="Properties"/> are the transport properties the
/// publisher gave the message (MQTT 5 message properties), encoded once by the gateway that took the publish and opaque to
/// the cluster: they travel with the message to history and to every gateway; null (nothing at all) when there are none.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicMessage")]
public sealed record TopicMessage(
    [property: Id(0)] string Topic,
    [property: Id(1)] string Epoch,
    [property: Id(2)] long Seq,
    [property: Id(3)] byte[] Data,
    [property: Id(4)] long PublishedAtUnixMs,
    [property: Id(5)] PayloadFormat Format = PayloadFormat.Json,
    [property: Id(6)] byte[]? Properties = null) : GatewayEvent;

/// <summary>What a message's payload is. Frozen: never renumber. A message serialized before this existed reads as
/// <see cref="Json"/>.</summary>
[GenerateSerializer, Alias("OrleansPush.PayloadFormat")]
public enum PayloadFormat
{
    /// <summary>One UTF-8 JSON value; JSON wire forms carry it as <c>data</c>, byte for byte.</summary>
    Json = 0,

    /// <summary>Any bytes; JSON wire forms carry it base64-encoded as <c>data_b64</c>, MQTT and MessagePack as the bytes.</summary>
    Binary = 1,
}

/// <summary>What a JSON payload must be, checked the same way by gateways and grains.</summary>
public static class JsonPayload
{
    /// <summary>Deepest nesting accepted.</summary>
    public const int MaxDepth = 64;

    /// <summary>True when <paramref name="utf8"/> is exactly one JSON value (whitespace around it allowed).</summary>
    public static bool IsOneValue(ReadOnlySpan<byte> utf8)
    {
        if (utf8.IsEmpty)
        {
            return false;
        }

        try
        {
            var reader = new System.Text.Json.Utf8JsonReader(utf8, new System.Text.Json.JsonReaderOptions { MaxDepth = MaxDepth });
            reader.Read();
            reader.Skip();
            return !reader.Read();
        }
        catch (System.Text.Json.JsonException)
        {
            return false;
        }
    }
}

/// <summary>A backend subscribed a user to a topic (or removed it): every connection of that user follows.
/// <see cref="Version"/> is the version of the user's list after the change (see <see cref="UserSubscriptions"/>); 0 from
/// a silo that predates versions.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserSubscriptionChanged")]
public sealed record UserSubscriptionChanged(
    [property: Id(0)] string UserId,
    [property: Id(1)] string Topic,
    [property: Id(2)] bool Subscribed,
    [property: Id(3)] long Version = 0) : GatewayEvent;

/// <summary>A user's server-side subscriptions. <see cref="Version"/> rises with every change (it is the change's
/// time in Unix milliseconds, or one more than the previous version), so a gateway can tell a stale answer or event from
/// a newer one; 0 means the user has no stored list, which is authoritative whatever came before.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserSubscriptions")]
public sealed record UserSubscriptions([property: Id(0)] string[] Topics, [property: Id(1)] long Version)
{
    /// <summary>The user's tokens issued (<c>iat</c>, Unix seconds) at or before this are revoked; 0 when none is.</summary>
    [Id(2)]
    public long RevokedBefore { get; init; }
}

/// <summary>An operator asked for a user to be disconnected: each gateway closes that user's local connections with the
/// reason <c>disconnected</c>.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserDisconnectRequested")]
public sealed record UserDisconnectRequested([property: Id(0)] string UserId) : GatewayEvent;

/// <summary>An operator revoked the user's tokens: each gateway refuses from now on every token of the user issued
/// (<c>iat</c>, Unix seconds) at or before <see cref="RevokedBefore"/>, and closes the connections that hold one with
/// <c>unauthorized</c>.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserTokensRevoked")]
public sealed record UserTokensRevoked([property: Id(0)] string UserId, [property: Id(1)] long RevokedBefore) : GatewayEvent;

/// <summary>A topic of a namespace with wildcards on became active for the first time since its namespace's directory
/// started: gateways with a wildcard subscription that matches it subscribe from <see cref="Head"/> on, so nothing
/// published after the announcement is missed.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicAnnounced")]
public sealed record TopicAnnounced(
    [property: Id(0)] string Topic,
    [property: Id(1)] string Epoch,
    [property: Id(2)] long Head) : GatewayEvent;

/// <summary>A page of a topic's history: <see cref="Messages"/> in seq order, all within <see cref="Epoch"/>.
/// <see cref="Head"/> is the topic's latest seq; <see cref="FirstAvailable"/> the oldest seq still kept
/// (<c>Head + 1</c> when the history is empty).</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.HistorySlice")]
public sealed record HistorySlice(
    [property: Id(0)] string Epoch,
    [property: Id(1)] long Head,
    [property: Id(2)] long FirstAvailable,
    [property: Id(3)] TopicMessage[] Messages);

/// <summary>A publish refused for a reason the publisher can act on. <see cref="Code"/> is one of the wire
/// protocol's error codes (<c>bad_topic</c>, <c>too_large</c>, ...).</summary>
[GenerateSerializer, Alias("OrleansPush.PushRejectedException")]
public sealed class PushRejectedException : Exception
{
    public PushRejectedException()
    {
        Code = WireCodes.BadRequest;
    }

    public PushRejectedException(string message) : base(message)
    {
        Code = WireCodes.BadRequest;
    }

    public PushRejectedException(string message, Exception inner) : base(message, inner)
    {
        Code = WireCodes.BadRequest;
    }

    public PushRejectedException(string code, string message) : base(message)
    {
        Code = code;
    }

    [Id(0)]
    public string Code { get; }
}

/// <summary>Consecutive messages of one topic, sequenced together (a group commit), in seq order.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicMessageBatch")]
public sealed record TopicMessageBatch([property: Id(0)] TopicMessage[] Messages) : GatewayEvent;

/// <summary>A user's first connection to a presence-enabled topic joined, or its last one left (cluster-wide).</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.PresenceChanged")]
public sealed record PresenceChanged(
    [property: Id(0)] string Topic,
    [property: Id(1)] string UserId,
    [property: Id(2)] bool Joined) : GatewayEvent;

/// <summary>Who is subscribed to a topic: users with their connection counts, and anonymous connections.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicPresence")]
public sealed record TopicPresence(
    [property: Id(0)] PresenceEntry[] Users,
    [property: Id(1)] int AnonymousConnections);

[GenerateSerializer, Immutable, Alias("OrleansPush.PresenceEntry")]
public sealed record PresenceEntry([property: Id(0)] string UserId, [property: Id(1)] int Connections);
