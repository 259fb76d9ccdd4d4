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
/// with its grain. Topics are spread over shards; each shard is one loop that alone owns its topics, so subscribe,
/// unsubscribe, replay and delivery of a topic are serialised without locks.
/// <para>Guarantees per topic and connection: messages in seq order, each at most once (duplicates from the stream
/// are dropped by seq); a gap in seq is filled from the topic's history before later messages are delivered; a
/// resume replays history first and joins the live flow with no gap or duplicate at the seam.</para>
/// </summary>
public sealed partial class TopicRouter : IAsyncDisposable
{
    /// <summary>Most messages one replay or gap fill reads from history.</summary>
    public const int MaxReplay = 100_000;

    private readonly Shard[] _shards;
    private readonly IClusterClient _cluster;
    private readonly GatewayIdentity _identity;
    private readonly GatewayOptions _options;
    private readonly ILogger<TopicRouter> _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task[] _loops;

    private readonly TopicOptions _topicOptions;

    public TopicRouter(IClusterClient cluster, GatewayIdentity identity, IOptions<GatewayOptions> options, IOptions<TopicOptions> topics,
        ILogger<TopicRouter> logger, TimeProvider time)
    {
        _topicOptions = topics.Value;
        _cluster = cluster;
        _identity = identity;
        _options = options.Value;
        _logger = logger;
        _time = time;
        _shards = new Shard[_options.EffectiveShards];
        for (var i = 0; i < _shards.Length; i++)
        {
            _shards[i] = new Shard(this);
        }

        _loops = Array.ConvertAll(_shards, s => Task.Run(() => s.RunAsync(_stopping.Token)));
    }

    /// <summary>Topics this gateway holds a lease for.</summary>
    public IEnumerable<string> Topics => _shards.SelectMany(s => s.LiveTopicNames);

    public int TopicCount => _shards.Sum(s => s.Count);

    /// <summary>Subscribes a connection. Completes once the connection is live on the topic: after the replay, when
    /// one was asked for, has been queued to it.</summary>
    /// <param name="presenceEvents">The connection wants join and leave events, where the namespace has presence.</param>
    /// <param name="hold">An automatic subscription made as the connection opens: live messages wait (for
    /// <see cref="GatewayOptions.AutoSubscriptionHold"/>) in case the client resumes the topic with <c>since</c>.</param>
    public Task<SubscribeResult> SubscribeAsync(PushConnection connection, string topic, Since? since, int last, bool presenceEvents = false, bool hold = false)
    {
        var request = new SubscribeCommand(connection, topic, since, last, presenceEvents, hold && _options.AutoSubscriptionHold > TimeSpan.Zero);
        ShardOf(topic).Post(request);
        return request.Completion.Task;
    }

    public void Unsubscribe(PushConnection connection, string topic) => ShardOf(topic).Post(new UnsubscribeCommand(connection, topic));

    /// <summary>A message from this gateway's stream.</summary>
    public void OnMessage(TopicMessage message) => ShardOf(message.Topic).Post(message);

    /// <summary>A user joined or left a presence-enabled topic somewhere in the cluster.</summary>
    public void OnPresence(PresenceChanged change) => ShardOf(change.Topic).Post(change);

    /// <summary>Consecutive messages of one topic from this gateway's stream.</summary>
    public void OnMessages(TopicMessageBatch batch)
    {
        if (batch.Messages.Length > 0)
        {
            ShardOf(batch.Messages[0].Topic).Post(batch);
        }
    }

    /// <summary>Renews every lease this gateway holds and checks each topic's position against the grain's: a topic
    /// that moved on without us (a lost stream event, a reactivated grain) is repaired from history.</summary>
    public async Task RenewAsync(CancellationToken cancellationToken)
    {
        await Parallel.ForEachAsync(
            Topics.ToArray(),
            new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = cancellationToken },
            async (topic, _) =>
            {
                try
                {
                    var position = await Grain(topic).AddInterestAsync(_identity.Id);
                    ShardOf(topic).Post(new PositionCheck(topic, position));
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
            shard.Post(SweepCommand.Instance);
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

    private Shard ShardOf(string topic) =>
        _shards.Length == 1 ? _shards[0] : _shards[(int)((uint)StringComparer.Ordinal.GetHashCode(topic) % (uint)_shards.Length)];

    private ITopicGrain Grain(string topic) => _cluster.GetGrain<ITopicGrain>(topic);

    private sealed record SubscribeCommand(PushConnection Connection, string Topic, Since? Since, int Last, bool PresenceEvents, bool Hold)
    {
        public TaskCompletionSource<SubscribeResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed record UnsubscribeCommand(PushConnection Connection, string Topic);

    private sealed record Registered(LocalTopic Topic, TopicPosition? Position, Exception? Error);

    private sealed record HistoryLoaded(LocalTopic Topic, Subscription Subscription, int Generation, SubscribeCommand Request, HistorySlice? Slice, Exception? Error);

    private sealed record GapLoaded(LocalTopic Topic, HistorySlice? Slice, Exception? Error);

    private sealed record PositionCheck(string Topic, TopicPosition Position);

    /// <summary>An automatic subscription's hold is over: what it held goes out, and it is live.</summary>
    private sealed record HoldElapsed(LocalTopic Topic, Subscription Subscription);

    private sealed record SweepCommand
    {
        public static readonly SweepCommand Instance = new();
    }

    private sealed class Subscription(PushConnection connection)
    {
        public PushConnection Connection { get; } = connection;

        /// <summary>The last seq queued to this connection.</summary>
        public long LastSeq { get; set; }

        /// <summary>Live messages held back while a replay is read, or while an automatic subscription waits to be
        /// claimed (<see cref="Claimable"/>); null when live.</summary>
        public List<OutboundMessage>? Held { get; set; }

        /// <summary>An automatic subscription still holding: a <c>sub</c> from the client takes it over.</summary>
        public bool Claimable { get; set; }

        /// <summary>The connection has every message after this seq up to <see cref="LastSeq"/> (it joined live here, or
        /// a replay filled in from here). A resume from earlier cannot be served in order.</summary>
        public long ContiguousFrom { get; set; }

        public int Generation { get; set; }

        public bool WantsPresence { get; set; }

        /// <summary>Whether any message went to this connection on this topic (then it never goes back below
        /// <see cref="LastSeq"/>, even when it asks to resume from earlier).</summary>
        public bool Delivered { get; set; }
    }

    private sealed class LocalTopic(string name, bool presence)
    {
        private Subscription[]? _snapshot;

        /// <summary>Local connections per member (user id, or "" for anonymous) when the namespace has presence.</summary>
        public Dictionary<string, int>? Members { get; } = presence ? new(StringComparer.Ordinal) : null;

        public string Name { get; } = name;

        /// <summary>False until the grain has answered the first interest registration.</summary>
        public bool Live { get; set; }

        public string Epoch { get; set; } = string.Empty;

        /// <summary>The last seq delivered to this gateway's subscribers.</summary>
        public long Seq { get; set; }

        public Dictionary<PushConnection, Subscription> Subscribers { get; } = [];

        public Subscription[] Snapshot => _snapshot ??= [.. Subscribers.Values];

        public List<SubscribeCommand>? Waiting { get; set; }

        /// <summary>Messages that arrived while registering or while a gap is being filled.</summary>
        public List<TopicMessage>? Held { get; set; }

        public bool FillingGap { get; set; }

        /// <summary>The seq at the previous lease renewal: a topic behind its grain and not moving is stalled.</summary>
        public long SeqAtLastCheck { get; set; } = -1;

        public long EmptySince { get; set; }

        public void Changed() => _snapshot = null;
    }
}
