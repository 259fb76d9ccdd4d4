using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Routing;

/// <summary>Where a client wants to resume from.</summary>
public sealed record Since(string Epoch, long Seq);

/// <summary>The answer to a subscribe: the position the connection is at now. <see cref="Recovered"/> is set when
/// the subscribe asked to resume (<c>since</c>): true when every missed message was replayed first.</summary>
public sealed record SubscribeResult(string Epoch, long Seq, bool? Recovered);

/// <summary>
/// This gateway's local view of topics: which local connections follow each topic, and the topic's interest lease
/// with its grain. Topics are spread over shards (<see cref="TopicShard"/>); each shard is one loop that alone owns its
/// topics, so subscribe, unsubscribe, replay and delivery of a topic are serialised without locks. This class only
/// routes each call to its topic's shard.
/// <para>Guarantees per topic and connection: messages in seq order, each at most once (duplicates from the stream
/// are dropped by seq); a gap in seq is filled from the topic's history before later messages are delivered, or every
/// subscriber that misses it is told (its subscription ends with <c>insufficient_state</c>); a resume replays history
/// at the pace the connection drains, however large, and joins the live flow with no gap or duplicate at the seam; a
/// new epoch is delivered from its seq 1.</para>
/// </summary>
public sealed class TopicRouter : IAsyncDisposable
{
    private readonly TopicShard[] _shards;
    private readonly TopicGrains _grains;
    private readonly TopicOptions _topics;
    private readonly ILogger<TopicRouter> _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task[] _loops;

    public TopicRouter(IClusterClient cluster, GatewayIdentity identity, IOptions<GatewayOptions> options, IOptions<TopicOptions> topics,
        ILogger<TopicRouter> logger, TimeProvider time)
    {
        _grains = new TopicGrains(cluster, identity);
        _topics = topics.Value;
        _logger = logger;
        _shards = new TopicShard[options.Value.EffectiveShards];
        for (var i = 0; i < _shards.Length; i++)
        {
            _shards[i] = new TopicShard(_grains, options.Value, topics.Value, time, logger);
        }

        _loops = Array.ConvertAll(_shards, s => Task.Run(() => s.RunAsync(_stopping.Token)));
    }

    /// <summary>Topics this gateway holds a lease for.</summary>
    public IEnumerable<string> Topics => _shards.SelectMany(s => s.LiveTopicNames);

    public int TopicCount => _shards.Sum(s => s.Count);

    /// <summary>Subscribes a connection. The result's <see cref="Subscribing.Completed"/> completes once the connection is
    /// live on the topic: after the replay, when one was asked for, has been queued to it.</summary>
    /// <param name="presenceEvents">The connection wants join and leave events, where the namespace has presence.</param>
    /// <param name="hold">An automatic subscription made as the connection opens: live messages wait (for
    /// <see cref="GatewayOptions.AutoSubscriptionHold"/>) in case the client resumes the topic with <c>since</c>.</param>
    /// <remarks>In a namespace that keeps a latest value (<see cref="NamespaceOptions.KeepLatest"/>,
    /// <see cref="NamespaceOptions.Retain"/>) a subscribe without <c>since</c> or <c>last</c> gets the topic's latest value
    /// first, whichever transport asked, then goes on from the topic's position.</remarks>
    public Subscribing Subscribe(PushConnection connection, string topic, Since? since, int last, bool presenceEvents = false, bool hold = false)
    {
        var request = new SubscribeCommand(connection, topic, since, last, presenceEvents, hold)
        {
            Latest = since is null && last < 1 && _topics.For(topic).KeepsLatestValue,
        };
        ShardOf(topic).PostBounded(request);
        return new Subscribing(request.Admitted.Task, request.Completion.Task);
    }

    public Task<SubscribeResult> SubscribeAsync(PushConnection connection, string topic, Since? since, int last, bool presenceEvents = false, bool hold = false) =>
        Subscribe(connection, topic, since, last, presenceEvents, hold).Completed;

    public void Unsubscribe(PushConnection connection, string topic) => ShardOf(topic).Post(new UnsubscribeCommand(connection, topic));

    /// <summary>The topic's latest value (<c>KeepLatest</c>, <c>Retain</c>) as its grain holds it now.</summary>
    public Task<HistorySlice> ReadLatestAsync(string topic) => _grains.ReadLatestAsync(topic);

    /// <summary>A message from this gateway's stream.</summary>
    public void OnMessage(TopicMessage message) => ShardOf(message.Topic).PostEvent(message);

    /// <summary>A user joined or left a presence-enabled topic somewhere in the cluster.</summary>
    public void OnPresence(PresenceChanged change) => ShardOf(change.Topic).PostEvent(change);

    /// <summary>Consecutive messages of one topic from this gateway's stream.</summary>
    public void OnMessages(TopicMessageBatch batch)
    {
        if (batch.Messages.Length > 0)
        {
            ShardOf(batch.Messages[0].Topic).PostEvent(batch);
        }
    }

    /// <summary>Renews every lease this gateway holds and checks each topic's position against the grain's: a topic
    /// that moved on without us (a lost stream event, a reactivated grain, a new epoch) is repaired from history.</summary>
    public async Task RenewAsync(CancellationToken cancellationToken)
    {
        await Parallel.ForEachAsync(
            Topics.ToArray(),
            new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = cancellationToken },
            async (topic, _) =>
            {
                try
                {
                    var position = await _grains.AddInterestAsync(topic);
                    ShardOf(topic).PostBounded(new PositionCheck(topic, position));
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    GatewayLog.LeaseRenewFailed(_logger, topic, ex);
                }
            });
    }

    /// <summary>Drops the leases of topics that have had no local subscriber for the linger time.</summary>
    public void Sweep()
    {
        foreach (var shard in _shards)
        {
            shard.PostBounded(SweepCommand.Instance);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        foreach (var shard in _shards)
        {
            shard.Complete();
        }

        await Task.WhenAll(_loops);
        _stopping.Dispose();
    }

    private TopicShard ShardOf(string topic) =>
        _shards.Length == 1 ? _shards[0] : _shards[(int)((uint)StringComparer.Ordinal.GetHashCode(topic) % (uint)_shards.Length)];
}
