namespace OrleansPush.Gateway.Routing;

/// <summary>The fan-out's calls to topic grains, on behalf of this gateway. Grain calls are at-most-once and may fail or
/// hang: every caller bounds and retries them itself (see <see cref="TopicShard"/>).</summary>
internal sealed class TopicGrains(IClusterClient cluster, GatewayIdentity identity)
{
    public Task<TopicPosition> AddInterestAsync(string topic) => Grain(topic).AddInterestAsync(identity.Id);

    public Task RemoveInterestAsync(string topic) => Grain(topic).RemoveInterestAsync(identity.Id);

    /// <summary>A page of history after <paramref name="afterSeq"/>, in the grain's current epoch (whatever the caller
    /// believes it to be: the slice says).</summary>
    public Task<HistorySlice> ReadAsync(string topic, long afterSeq, int max) => Grain(topic).ReadAsync(afterSeq, max);

    /// <summary>The topic's latest value (<c>KeepLatest</c>, <c>Retain</c>), with the grain's current position.</summary>
    public Task<HistorySlice> ReadLatestAsync(string topic) => Grain(topic).ReadLatestAsync();

    public Task ReportPresenceAsync(string topic, string member, int connections) =>
        Grain(topic).ReportPresenceAsync(identity.Id, member, connections);

    private ITopicGrain Grain(string topic) => cluster.GetGrain<ITopicGrain>(topic);
}
