namespace OrleansPush;

/// <summary>
/// One topic (key: the topic name). The single writer of the topic's sequence.
/// <para>Guarantees: <see cref="PublishAsync(byte[], PayloadFormat, string?)"/> gives each message the next <c>seq</c> of the current epoch, keeps it
/// in the recent history, and writes it once to the stream of every gateway holding a live interest lease, in seq
/// order. The answer comes after the message is sequenced; stream delivery is at-most-once, which is why gateways
/// check seq continuity and read gaps back through <see cref="ReadAsync"/>.</para>
/// </summary>
[Alias("OrleansPush.ITopicGrain")]
public interface ITopicGrain : IGrainWithStringKey
{
    /// <summary>Sequences and routes one message. <paramref name="data"/> must be one UTF-8 JSON value (else
    /// <see cref="PushRejectedException"/> <c>bad_request</c>); it is published as <see cref="PayloadFormat.Json"/>.
    /// With an idempotency key seen within the dedupe window, nothing is published again and the first publish's
    /// position is returned.</summary>
    [Alias("Publish")]
    Task<TopicPosition> PublishAsync(byte[] data, string? idempotencyKey);

    /// <summary>As <see cref="PublishAsync(byte[], string?)"/>, with the payload's format: <see cref="PayloadFormat.Json"/>
    /// must be one UTF-8 JSON value, <see cref="PayloadFormat.Binary"/> may be any bytes (even none). The format travels
    /// with the message to history and to every subscriber.</summary>
    [Alias("PublishFormatted")]
    Task<TopicPosition> PublishAsync(byte[] data, PayloadFormat format, string? idempotencyKey);

    /// <summary>A retained publish (MQTT's retain flag), in a namespace with <c>Retain</c> or <c>KeepLatest</c> (elsewhere
    /// <c>bad_request</c>). With a payload it is published as <see cref="PublishAsync(byte[], PayloadFormat, string?)"/>
    /// and becomes the topic's latest value, which a subscribe without <c>since</c> receives first. An empty one clears
    /// the latest value and is not published: the answer is then the topic's position. Clears and publishes of a topic
    /// apply in the order they arrive. <paramref name="properties"/>: as for a publish.</summary>
    [Alias("PublishRetained")]
    Task<TopicPosition> PublishRetainedAsync(byte[] data, PayloadFormat format, byte[]? properties);
    /// <summary>As <see cref="PublishAsync(byte[], PayloadFormat, string?)"/>, with the message's transport properties
    /// (<see cref="TopicMessage.Properties"/>, opaque here; null for none), kept and delivered with it.</summary>
    [Alias("PublishWithProperties")]
    Task<TopicPosition> PublishAsync(byte[] data, PayloadFormat format, byte[]? properties, string? idempotencyKey);

    /// <summary>Registers or renews a gateway's interest lease and returns the position at that instant: every
    /// message after it is routed to the gateway while the lease lives.</summary>
    [Alias("AddInterest")]
    Task<TopicPosition> AddInterestAsync(string gatewayId);

    /// <summary>Drops a gateway's lease at once (its last local subscriber left).</summary>
    [Alias("RemoveInterest")]
    Task RemoveInterestAsync(string gatewayId);

    /// <summary>Messages with seq greater than <paramref name="afterSeq"/>, oldest first, at most <paramref name="max"/>.</summary>
    [Alias("Read")]
    Task<HistorySlice> ReadAsync(long afterSeq, int max);

    /// <summary>The newest <paramref name="count"/> messages, oldest first.</summary>
    [Alias("ReadLast")]
    Task<HistorySlice> ReadLastAsync(int count);

    /// <summary>The topic's latest value (<c>KeepLatest</c>: its newest message; <c>Retain</c>: its last retained one) as
    /// the slice's only message, or no message when it has none; the slice's head is the topic's position.</summary>
    [Alias("ReadLatest")]
    Task<HistorySlice> ReadLatestAsync();

    [Alias("GetPosition")]
    Task<TopicPosition> GetPositionAsync();

    /// <summary>A gateway reports how many of its connections a member (a user id, or "" for anonymous connections)
    /// has on this topic. Joins and leaves that change the cluster-wide picture are announced to the gateways.</summary>
    [Alias("ReportPresence")]
    Task ReportPresenceAsync(string gatewayId, string member, int connections);

    /// <summary>Who is subscribed, counted over the gateways with a live lease.</summary>
    [Alias("GetPresence")]
    Task<TopicPresence> GetPresenceAsync();

    /// <summary>The gateways that currently hold a live lease (for operators and tests).</summary>
    [Alias("GetGateways")]
    Task<string[]> GetGatewaysAsync();
}

/// <summary>
/// One user (key: user id): the personal channel <c>user:{id}</c> and the topics a backend subscribed the user to.
/// <para>Gateways that hold a connection of the user attach with a lease; a change of the user's subscriptions is
/// sent to each attached gateway's stream, so every connection of the user, on any gateway, follows it.</para>
/// </summary>
[Alias("OrleansPush.IUserGrain")]
public interface IUserGrain : IGrainWithStringKey
{
    /// <summary>Registers or renews the gateway's lease and returns the user's server-side subscriptions.</summary>
    [Alias("Attach")]
    Task<string[]> AttachAsync(string gatewayId);

    /// <summary>As <see cref="AttachAsync"/>, with the list's version: a gateway reconciles its connections with the
    /// list at attach and at every renewal (a <see cref="UserSubscriptionChanged"/> can be lost), ignoring an answer
    /// older than a change it has already applied.</summary>
    [Alias("Sync")]
    Task<UserSubscriptions> SyncAsync(string gatewayId);

    [Alias("Detach")]
    Task DetachAsync(string gatewayId);

    /// <summary>Publishes to the user's personal channel, as <see cref="ITopicGrain.PublishAsync(byte[], string?)"/> does (one JSON
    /// value, else <c>bad_request</c>).</summary>
    [Alias("Push")]
    Task<TopicPosition> PushAsync(byte[] data, string? idempotencyKey);

    /// <summary>As <see cref="ITopicGrain.PublishAsync(byte[], PayloadFormat, string?)"/>, on the user's personal channel.</summary>
    [Alias("PushFormatted")]
    Task<TopicPosition> PushAsync(byte[] data, PayloadFormat format, string? idempotencyKey);

    /// <summary>Adds a server-side subscription; true when it was not there before. Idempotent. The change is stored
    /// before it is announced; when storing fails the grain's list is as it was, so a retry stores and announces it.</summary>
    [Alias("Subscribe")]
    Task<bool> SubscribeAsync(string topic);

    /// <summary>Removes a server-side subscription; true when it was there. Idempotent.</summary>
    [Alias("Unsubscribe")]
    Task<bool> UnsubscribeAsync(string topic);

    [Alias("GetSubscriptions")]
    Task<string[]> GetSubscriptionsAsync();

    /// <summary>Asks every gateway attached to the user to close the user's connections there (reason
    /// <c>disconnected</c>). At most once per gateway, like any gateway-stream event; clients may reconnect.</summary>
    [Alias("Disconnect")]
    Task DisconnectAsync();

    /// <summary>Revokes every token of the user issued (<c>iat</c>) in this second or before: stored durably in the
    /// user's state first (it survives gateway and silo restarts), then announced to every attached gateway
    /// (<see cref="UserTokensRevoked"/>), which closes the user's connections holding such a token. Returns the
    /// revocation's second (Unix seconds); a token issued after it is accepted. When storing fails nothing changed and
    /// the call throws: retry it.</summary>
    [Alias("Revoke")]
    Task<long> RevokeAsync();

    /// <summary>The second (Unix seconds) at or before which the user's tokens are revoked; 0 when none is. Gateways ask
    /// this at a connect of a user they hold nothing of (they learn it with <see cref="SyncAsync"/> otherwise).</summary>
    [Alias("GetRevokedBefore")]
    Task<long> GetRevokedBeforeAsync();

    /// <summary>A gateway would hold <paramref name="connectionsHere"/> connections of the user with a new one: true
    /// (and recorded) when that plus the connections every other gateway with a live lease reported is at most
    /// <paramref name="limit"/>; false (nothing recorded) otherwise. Renews the gateway's lease. The counts are soft
    /// state: a grain that moved knows each gateway's count again from its next report.</summary>
    [Alias("TryConnect")]
    Task<bool> TryConnectAsync(string gatewayId, int connectionsHere, int limit);

    /// <summary>A gateway now holds <paramref name="connectionsHere"/> connections of the user (after a close).</summary>
    [Alias("ReportConnections")]
    Task ReportConnectionsAsync(string gatewayId, int connectionsHere);
}

/// <summary>
/// The directory of one namespace (key: the namespace) whose options allow wildcard subscriptions: the topics that are
/// alive (announced within the namespace's <c>HistoryTtl</c> + <c>PositionTtl</c>). Topics announce themselves when they
/// activate and again while they are published to; gateways that serve a
/// wildcard subscription in the namespace watch it with a lease and hear of each new topic on their stream.
/// <para>Soft state: a directory that restarts (its silo died) knows again each topic as it next activates.</para>
/// </summary>
[Alias("OrleansPush.INamespaceGrain")]
public interface INamespaceGrain : IGrainWithStringKey
{
    /// <summary>Registers or renews the gateway's watch and returns the topics known now.</summary>
    [Alias("Watch")]
    Task<string[]> WatchAsync(string gatewayId);

    /// <summary>As <see cref="WatchAsync"/>, with the position each topic announced (the start of its activation: head
    /// 0 of a new epoch for a new topic). A gateway that learns of a topic here rather than from its
    /// <see cref="TopicAnnounced"/> (the announcement was lost) subscribes from that position, so the topic's first
    /// messages are not missed.</summary>
    [Alias("WatchPositions")]
    Task<TopicAnnounced[]> WatchPositionsAsync(string gatewayId);

    /// <summary>A topic of the namespace activated at this position; new ones are announced to watching gateways. A topic
    /// already known keeps the position it first announced and is kept for another lifetime: an entry lasts the
    /// namespace's <c>HistoryTtl</c> + <c>PositionTtl</c> after its topic last announced itself (a topic announces itself
    /// again while it is published to), so the directory holds the topics that are alive, not every topic ever seen.</summary>
    [Alias("Announce")]
    Task AnnounceAsync(string topic, string epoch, long head);
}
