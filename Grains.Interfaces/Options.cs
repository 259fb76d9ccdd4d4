namespace OrleansPush;

/// <summary>Names shared by silos and gateways; they must match on both sides.</summary>
public static class PushNames
{
    /// <summary>The Orleans stream provider that carries messages to gateways.</summary>
    public const string StreamProvider = "push";

    /// <summary>The stream namespace of the per-gateway streams (stream key = gateway id).</summary>
    public const string GatewayStreamNamespace = "orleanspush.gateway";

    /// <summary>Grain storage of user subscriptions and other grain state.</summary>
    public const string StateStore = "push";

    /// <summary>Grain storage for Orleans' stream pub-sub.</summary>
    public const string PubSubStore = "PubSubStore";
}

/// <summary>Per-namespace options of topics (<c>OrleansPush:Topics</c>).</summary>
public sealed class TopicOptions
{
    public const string Section = "OrleansPush:Topics";

    /// <summary>Options for topics whose namespace has no entry in <see cref="Namespaces"/>.</summary>
    public NamespaceOptions Default { get; set; } = new();

    /// <summary>Options for personal channels (<c>user:{id}</c>): a longer history serves as the offline inbox.</summary>
    public NamespaceOptions Personal { get; set; } = new()
    {
        HistorySize = NamespaceOptions.DefaultPersonalHistorySize,
        HistoryTtl = NamespaceOptions.DefaultPersonalHistoryTtl,
    };

    /// <summary>Options by namespace (the part of the topic before the first <c>:</c>).</summary>
    public Dictionary<string, NamespaceOptions> Namespaces { get; set; } = new(StringComparer.Ordinal);

    /// <summary>How long an <c>Idempotency-Key</c> is remembered.</summary>
    public TimeSpan DedupeWindow { get; set; } = TimeSpan.FromMinutes(2);

    public NamespaceOptions For(string topic)
    {
        if (TopicName.PersonalOwner(topic) is not null)
        {
            return Personal;
        }

        return Namespaces.TryGetValue(TopicName.NamespaceOf(topic), out var ns) ? ns : Default;
    }
}

public sealed class NamespaceOptions
{
    public const int DefaultHistorySize = 100;
    public static readonly TimeSpan DefaultHistoryTtl = TimeSpan.FromHours(1);
    public const int DefaultPersonalHistorySize = 1000;
    public static readonly TimeSpan DefaultPersonalHistoryTtl = TimeSpan.FromHours(24);

    /// <summary>How many recent messages a topic keeps for recovery.</summary>
    public int HistorySize { get; set; } = DefaultHistorySize;

    /// <summary>How long a message stays in history.</summary>
    public TimeSpan HistoryTtl { get; set; } = DefaultHistoryTtl;

    /// <summary>Whether connected clients may publish (<c>pub</c>) to topics of this namespace.</summary>
    public bool ClientPublish { get; set; }
}

/// <summary>How topics route to gateways (<c>OrleansPush:Routing</c>).</summary>
public sealed class RoutingOptions
{
    public const string Section = "OrleansPush:Routing";
    public static readonly TimeSpan DefaultLease = TimeSpan.FromSeconds(60);

    /// <summary>A gateway's interest in a topic or a user lapses this long after its last renewal; gateways renew
    /// at a third of it.</summary>
    public TimeSpan Lease { get; set; } = DefaultLease;

    public TimeSpan RenewInterval => Lease / 3;
}

/// <summary>The Orleans stream that carries messages to gateways (<c>OrleansPush:Streams</c>); silos and gateways
/// must agree on it.</summary>
public sealed class PushStreamOptions
{
    public const string Section = "OrleansPush:Streams";
    public const int DefaultQueueCount = 4;
    public static readonly TimeSpan DefaultPollPeriod = TimeSpan.FromMilliseconds(5);

    /// <summary>Number of memory-stream queues (partitions).</summary>
    public int QueueCount { get; set; } = DefaultQueueCount;

    /// <summary>How often each queue is polled. It bounds the latency the stream hop adds; see README "Performance".</summary>
    public TimeSpan PollPeriod { get; set; } = DefaultPollPeriod;

    /// <summary>Most stream events a pulling agent hands to a gateway in one delivery call (Orleans' default is 1:
    /// one call per event). Batching cut CPU per message several times over in the benchmark; see README.</summary>
    public int DeliveryBatchSize { get; set; } = DefaultDeliveryBatchSize;

    public const int DefaultDeliveryBatchSize = 64;
}

/// <summary>Where the cluster is and how this process joins it (<c>OrleansPush:Cluster</c>).</summary>
public sealed class ClusterSettings
{
    public const string Section = "OrleansPush:Cluster";
    public const int DefaultSiloPort = 11111;
    public const int DefaultGatewayPort = 30000;

    /// <summary><c>Embedded</c> (the gateway co-hosts a silo; the default) or <c>Localhost</c> (silos run as their
    /// own processes on this machine, found through localhost clustering).</summary>
    public ClusterMode Mode { get; set; } = ClusterMode.Embedded;

    public string ClusterId { get; set; } = "orleanspush";

    public string ServiceId { get; set; } = "orleanspush";

    /// <summary>The silo-to-silo port of a silo started by this process.</summary>
    public int SiloPort { get; set; } = DefaultSiloPort;

    /// <summary>The client gateway port of a silo started by this process.</summary>
    public int GatewayPort { get; set; } = DefaultGatewayPort;

    /// <summary>Localhost clustering: the silo port of the first (primary) silo, which the others join; unset, this
    /// process's own silo is the primary.</summary>
    public int? PrimarySiloPort { get; set; }

    /// <summary>How long a grain call may take before it fails (Orleans' default is 30 s; a publisher would rather
    /// hear "unavailable" sooner and retry).</summary>
    public TimeSpan ResponseTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Localhost clustering: the silo gateway ports a gateway process connects to.</summary>
    public int[] GatewayPorts { get; set; } = [DefaultGatewayPort];
}

public enum ClusterMode
{
    Embedded,
    Localhost,
}
