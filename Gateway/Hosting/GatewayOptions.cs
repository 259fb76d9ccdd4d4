using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Hosting;

/// <summary>Limits and timings of one gateway (<c>OrleansPush:Gateway</c>).</summary>
public sealed class GatewayOptions
{
    public const string Section = "OrleansPush:Gateway";
    public const int DefaultMaxMessageBytes = 64 * 1024;
    public const int DefaultMaxSubscriptionsPerConnection = 1000;
    public const int DefaultOutboundQueueBytes = 1024 * 1024;
    public static readonly TimeSpan DefaultKeepAliveInterval = TimeSpan.FromSeconds(20);
    public static readonly TimeSpan DefaultEmptyTopicLinger = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan DefaultSlowCloseGrace = TimeSpan.FromSeconds(2);
    public static readonly TimeSpan DefaultWriteStallTimeout = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan DefaultAutoSubscriptionHold = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan DefaultPublishAttemptTimeout = TimeSpan.FromSeconds(3);
    public static readonly TimeSpan DefaultPublishTimeout = TimeSpan.FromSeconds(15);

    /// <summary>Largest client frame and largest published message body, in bytes.</summary>
    public int MaxMessageBytes { get; set; } = DefaultMaxMessageBytes;

    public int MaxSubscriptionsPerConnection { get; set; } = DefaultMaxSubscriptionsPerConnection;

    /// <summary>Bytes a connection may have waiting to be written; past it the connection is closed as <c>slow</c>.</summary>
    public int OutboundQueueBytes { get; set; } = DefaultOutboundQueueBytes;

    public TimeSpan KeepAliveInterval { get; set; } = DefaultKeepAliveInterval;

    /// <summary>How long a topic with no local subscriber keeps its lease, so a quick re-subscribe is free.</summary>
    public TimeSpan EmptyTopicLinger { get; set; } = DefaultEmptyTopicLinger;

    /// <summary>How long a connection closed as slow gets to take its goodbye before it is aborted.</summary>
    public TimeSpan SlowCloseGrace { get; set; } = DefaultSlowCloseGrace;

    /// <summary>How long a write to a connection may wait for the transport while a catch-up (history replayed to it)
    /// waits for room in its queue, before the connection is closed as <c>slow</c>: a client that stopped reading. A
    /// client that reads, however slowly, keeps its catch-up going. Zero turns it off.</summary>
    public TimeSpan WriteStallTimeout { get; set; } = DefaultWriteStallTimeout;

    /// <summary>The outbound queue limits every queued connection gets.</summary>
    public Connections.OutboundLimits Outbound => new(OutboundQueueBytes, SlowCloseGrace, WriteStallTimeout);

    /// <summary>How long the subscriptions a WebSocket or SignalR connection gets when it opens (its personal channel,
    /// its server-side subscriptions) hold live messages back, so that a client which resumes one of them with
    /// <c>since</c> right after connecting gets what it missed and then what is new, in order. A <c>sub</c> for such a
    /// topic ends its hold at once; zero turns holding off.</summary>
    public TimeSpan AutoSubscriptionHold { get; set; } = DefaultAutoSubscriptionHold;

    /// <summary>How long one attempt of a publish waits for its grain. A publish with an idempotency key is tried again
    /// after it (a silo that died takes its unanswered calls with it), until <see cref="PublishTimeout"/>; one without
    /// a key is answered <c>unavailable</c>.</summary>
    public TimeSpan PublishAttemptTimeout { get; set; } = DefaultPublishAttemptTimeout;

    /// <summary>The longest a keyed publish is retried inside the gateway before the publisher hears <c>unavailable</c>.</summary>
    public TimeSpan PublishTimeout { get; set; } = DefaultPublishTimeout;

    /// <summary>Fan-out shards (topics are spread over them by name); 0 means one per processor.</summary>
    public int Shards { get; set; }

    /// <summary>Development identity: a connection may name its user with <c>?user=</c>.</summary>
    public bool AllowUserQueryParameter { get; set; } = true;

    public int EffectiveShards => Shards > 0 ? Shards : Environment.ProcessorCount;
}

internal sealed class GatewayOptionsValidator : IValidateOptions<GatewayOptions>
{
    public ValidateOptionsResult Validate(string? name, GatewayOptions o)
    {
        var failures = new List<string>();
        if (o.MaxMessageBytes is < 256 or > 16 * 1024 * 1024)
        {
            failures.Add($"{GatewayOptions.Section}:MaxMessageBytes must be between 256 and 16777216 (is {o.MaxMessageBytes}).");
        }

        if (o.AutoSubscriptionHold < TimeSpan.Zero || o.AutoSubscriptionHold > TimeSpan.FromSeconds(30))
        {
            failures.Add($"{GatewayOptions.Section}:AutoSubscriptionHold must be between 0 and 30 seconds (is {o.AutoSubscriptionHold}).");
        }

        if (o.PublishAttemptTimeout <= TimeSpan.Zero || o.PublishTimeout < o.PublishAttemptTimeout)
        {
            failures.Add($"{GatewayOptions.Section}:PublishAttemptTimeout must be positive and at most PublishTimeout.");
        }

        if (o.MaxSubscriptionsPerConnection < 1)
        {
            failures.Add($"{GatewayOptions.Section}:MaxSubscriptionsPerConnection must be at least 1.");
        }

        if (o.OutboundQueueBytes < o.MaxMessageBytes)
        {
            failures.Add($"{GatewayOptions.Section}:OutboundQueueBytes must be at least MaxMessageBytes ({o.MaxMessageBytes}).");
        }

        if (o.WriteStallTimeout < TimeSpan.Zero)
        {
            failures.Add($"{GatewayOptions.Section}:WriteStallTimeout must be zero (off) or positive (is {o.WriteStallTimeout}).");
        }

        if (o.Shards < 0)
        {
            failures.Add($"{GatewayOptions.Section}:Shards must be 0 (one per processor) or more.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
