namespace OrleansPush;

/// <summary>A topic's position: <see cref="Seq"/> counts messages from 1 within <see cref="Epoch"/>; a new epoch means
/// the topic's history was lost and older positions cannot be resumed.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicPosition")]
public sealed record TopicPosition([property: Id(0)] string Epoch, [property: Id(1)] long Seq);

/// <summary>What a gateway receives on its own stream. Frozen: never reorder or reuse ids.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.GatewayEvent")]
public abstract record GatewayEvent;

/// <summary>One sequenced message. <see cref="Data"/> is the publisher's JSON, byte for byte (UTF-8).</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.TopicMessage")]
public sealed record TopicMessage(
    [property: Id(0)] string Topic,
    [property: Id(1)] string Epoch,
    [property: Id(2)] long Seq,
    [property: Id(3)] byte[] Data,
    [property: Id(4)] long PublishedAtUnixMs) : GatewayEvent;

/// <summary>A backend subscribed a user to a topic (or removed it): every connection of that user follows.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserSubscriptionChanged")]
public sealed record UserSubscriptionChanged(
    [property: Id(0)] string UserId,
    [property: Id(1)] string Topic,
    [property: Id(2)] bool Subscribed) : GatewayEvent;

/// <summary>An operator asked for a user to be disconnected: each gateway closes that user's local connections with the
/// reason <c>disconnected</c>.</summary>
[GenerateSerializer, Immutable, Alias("OrleansPush.UserDisconnectRequested")]
public sealed record UserDisconnectRequested([property: Id(0)] string UserId) : GatewayEvent;

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
        Code = "bad_request";
    }

    public PushRejectedException(string message) : base(message)
    {
        Code = "bad_request";
    }

    public PushRejectedException(string message, Exception inner) : base(message, inner)
    {
        Code = "bad_request";
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
