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

    public static readonly TimeSpan DefaultPositionTtl = TimeSpan.FromHours(24);

    /// <summary>How much longer than its history a quiet topic's position (epoch and seq) is kept. After a topic's last
    /// publish, <see cref="HistoryTtl"/> + this, the store forgets the topic: its next publish starts a new epoch at
    /// seq 1, and a client resuming an older position is told <c>recovered:false</c>.</summary>
    public TimeSpan PositionTtl { get; set; } = DefaultPositionTtl;

    /// <summary>Whether connected clients may publish (<c>pub</c>) to topics of this namespace.</summary>
    public bool ClientPublish { get; set; }

    /// <summary>Whether topics of this namespace track who is subscribed (presence) and announce joins and leaves.</summary>
    public bool Presence { get; set; }

    /// <summary>State topics: the topic's newest message is its latest value, kept durably beyond
    /// <see cref="HistorySize"/> and <see cref="HistoryTtl"/> (for as long as the topic's position,
    /// <see cref="PositionTtl"/> after its last publish). A subscribe without <c>since</c> receives it first, and a
    /// resume that history can no longer serve receives it (with <c>recovered:false</c>).</summary>
    public bool KeepLatest { get; set; }

    /// <summary>MQTT retained messages: only a retained PUBLISH sets the topic's retained value (and is published as any
    /// other); an empty retained PUBLISH clears it (and is not published). The value is kept like
    /// <see cref="KeepLatest"/>'s latest value (durably, beyond history, as long as the topic's position), and a subscribe
    /// without <c>since</c> receives it first on every transport (MQTT: with the retain flag). With
    /// <see cref="KeepLatest"/> as well, every publish sets it.</summary>
    public bool Retain { get; set; }

    /// <summary>Whether the topic keeps a latest value (<see cref="KeepLatest"/> or <see cref="Retain"/>).</summary>
    public bool KeepsLatestValue => KeepLatest || Retain;

    /// <summary>Delta compression: a raw-WebSocket subscriber that asks for it (<c>"delta":"fossil"</c>) gets each message
    /// as a Fossil delta against the topic's previous message whenever that is smaller, computed once per gateway.</summary>
    public bool Delta { get; set; }

    /// <summary>Conflation, for topics where only the newest state matters: a subscriber whose outbound queue still holds
    /// an older message of the topic gets only the newest instead of every one (the <c>seq</c> jumps, visibly), and is
    /// never closed as slow for that topic. Raw WebSocket, SSE and SignalR subscribers conflate.</summary>
    public bool Conflate { get; set; }

    /// <summary>Whether any connection may subscribe to topics of this namespace without a matching <c>topics</c> claim.</summary>
    public bool PublicSubscribe { get; set; }

    /// <summary>Whether MQTT clients may subscribe with wildcard filters (<c>+</c>, <c>#</c>) within this namespace;
    /// its topics then announce themselves to the namespace's directory (one call per topic activation).</summary>
    public bool Wildcards { get; set; }
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

    /// <summary>Number of stream queues (partitions).</summary>
    public int QueueCount { get; set; } = DefaultQueueCount;

    /// <summary>How soon a queue's pulling agent reads again after a read that came back empty. A read of an empty
    /// queue waits for the next event (up to a few seconds), so this no longer bounds the hop's latency; see README
    /// "Performance".</summary>
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
    /// hear WireCodes.Unavailable sooner and retry).</summary>
    public TimeSpan ResponseTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Whether silos find grains through Orleans' strongly consistent distributed grain directory (the
    /// default): a topic grain then has at most one activation at a time, also while silos join, leave or die. Every
    /// silo of a cluster must agree. Off, Orleans' eventually consistent directory may briefly run a second activation
    /// after a membership change; history stays fenced (a second writer's appends are refused), but that activation's
    /// publishers may be told "not published".</summary>
    public bool StrongGrainDirectory { get; set; } = true;

    /// <summary>With <see cref="StrongGrainDirectory"/>: how long after a silo's estimated failure time its grains may not
    /// be activated elsewhere (Orleans' <c>GrainDirectoryOptions.RangeLeaseDuration</c>), in case the silo declared
    /// dead is still running. Orleans' default is 30 s, which holds every grain of a killed silo unavailable for about
    /// that long; ours is zero, so failover takes as long as failure detection. History appends are fenced either way,
    /// so a silo declared dead that still runs cannot give a seq a second payload; raise it where a second activation
    /// for a few seconds after a false failure detection costs more than those seconds of unavailability.</summary>
    public TimeSpan GrainDirectoryLease { get; set; } = TimeSpan.Zero;

    /// <summary>Localhost clustering: the silo gateway ports a gateway process connects to.</summary>
    public int[] GatewayPorts { get; set; } = [DefaultGatewayPort];

    /// <summary>How silos find each other and gateways find silos: <c>Localhost</c> (the default; fixed loopback
    /// ports), <c>Redis</c> or <c>Postgres</c> (a membership table every silo and gateway reads).</summary>
    public ClusteringProvider Clustering { get; set; } = ClusteringProvider.Localhost;

    /// <summary>The Redis of the membership table; unset, <c>OrleansPush:Storage:Redis</c> is used.</summary>
    public string? Redis { get; set; }

    /// <summary>The PostgreSQL of the membership table; unset, <c>OrleansPush:Storage:Postgres</c> is used.</summary>
    public string? Postgres { get; set; }

    /// <summary>The address a silo publishes in the membership table. Unset: the pod's IP (<c>POD_IP</c>, from the
    /// downward API) when there is one, else 127.0.0.1.</summary>
    public string? AdvertisedIP { get; set; }

    /// <summary>The silo's name in the membership table. Unset: the pod's name (<c>POD_NAME</c>) when there is one.</summary>
    public string? SiloName { get; set; }

    /// <summary>Whether a silo listens on every interface rather than only on <see cref="AdvertisedIP"/> (true in
    /// containers, where the advertised pod IP is not always a local interface address). Unset: true when
    /// <c>POD_IP</c> is set.</summary>
    public bool? ListenOnAnyHostAddress { get; set; }
}

public enum ClusterMode
{
    /// <summary>The gateway co-hosts a silo.</summary>
    Embedded,

    /// <summary>The gateway joins silos on this machine at <see cref="ClusterSettings.GatewayPorts"/>.</summary>
    Localhost,

    /// <summary>The gateway is a pure client of whatever <see cref="ClusterSettings.Clustering"/> names.</summary>
    Cluster,
}

public enum ClusteringProvider
{
    Localhost,
    Redis,
    Postgres,
}
