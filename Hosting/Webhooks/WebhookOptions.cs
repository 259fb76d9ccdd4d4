using Microsoft.Extensions.Options;

namespace OrleansPush.Hosting.Webhooks;

/// <summary>Signed webhooks to the application's backend (<c>OrleansPush:Webhooks</c>). Silos and gateways read the same
/// section: events are produced where they are decided (topic and user grains, a gateway for client publishes) and
/// delivered by the silos.</summary>
public sealed class WebhookOptions
{
    public const string Section = "OrleansPush:Webhooks";

    /// <summary>The reserved namespace of the internal event topics (<c>_webhooks:{shard}</c>): clients can neither
    /// subscribe nor publish to it.</summary>
    public const string Namespace = "_webhooks";

    /// <summary>The endpoints by name.</summary>
    public Dictionary<string, WebhookEndpointOptions> Endpoints { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Event topics; events of one topic (or one user) always go to the same one, so they stay in order, and
    /// each endpoint delivers the shards in parallel.</summary>
    public int Shards { get; set; } = 8;

    /// <summary>How long one POST may take before it counts as failed and is retried.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The first wait before a failed event is sent again; it doubles up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan FirstRetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Events an event topic keeps for endpoints that are behind (beyond that, the oldest are dropped and
    /// logged).</summary>
    public int MaxBacklog { get; set; } = 100_000;

    public bool Wants(string type)
    {
        foreach (var endpoint in Endpoints.Values)
        {
            if (endpoint.Wants(type))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The event topic of a topic's or user's events (a hash that is the same in every process).</summary>
    public string EventTopic(string orderKey) => $"{Namespace}:{Shard(orderKey)}";

    public int Shard(string orderKey)
    {
        var hash = 2166136261u;
        foreach (var c in orderKey)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return (int)(hash % (uint)Shards);
    }

    /// <summary>The key of the dispatcher grain of an endpoint and shard.</summary>
    public static string DispatcherKey(string endpoint, int shard) => $"{shard}|{endpoint}";

    /// <summary>The longest <see cref="WebhookEndpointOptions.MaxAge"/>: how long event topics keep events.</summary>
    public TimeSpan LongestMaxAge() => Endpoints.Count == 0 ? TimeSpan.FromHours(1) : Endpoints.Values.Max(e => e.MaxAge);
}

public sealed class WebhookEndpointOptions
{
    public string? Url { get; set; }

    /// <summary>The HMAC-SHA256 key of <c>OrleansPush-Signature</c>: at least 32 characters.</summary>
    public string? Secret { get; set; }

    /// <summary>The event types sent to this endpoint; all when empty.</summary>
    public string[] Events { get; set; } = [];

    /// <summary>How long an event is retried before it is dropped (and logged).</summary>
    public TimeSpan MaxAge { get; set; } = TimeSpan.FromHours(1);

    public bool Wants(string type) => Events.Length == 0 || Array.IndexOf(Events, type) >= 0;
}

/// <summary>The event types of DESIGN.md "Backends in the loop".</summary>
public static class WebhookEventTypes
{
    public const string TopicOccupied = "topic.occupied";
    public const string TopicVacated = "topic.vacated";
    public const string PresenceJoin = "presence.join";
    public const string PresenceLeave = "presence.leave";
    public const string UserConnected = "user.connected";
    public const string UserDisconnected = "user.disconnected";
    public const string MessagePublished = "message.published";

    public static readonly string[] All =
        [TopicOccupied, TopicVacated, PresenceJoin, PresenceLeave, UserConnected, UserDisconnected, MessagePublished];
}

public sealed class WebhookOptionsValidator : IValidateOptions<WebhookOptions>
{
    public ValidateOptionsResult Validate(string? name, WebhookOptions o)
    {
        var failures = new List<string>();
        Failures.Range(failures, $"{WebhookOptions.Section}:Shards", o.Shards, 1, 256);
        Failures.Range(failures, $"{WebhookOptions.Section}:RequestTimeout", o.RequestTimeout, TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(5));
        Failures.Range(failures, $"{WebhookOptions.Section}:FirstRetryDelay", o.FirstRetryDelay, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(10));
        Failures.Range(failures, $"{WebhookOptions.Section}:MaxRetryDelay", o.MaxRetryDelay, o.FirstRetryDelay, TimeSpan.FromHours(1));
        Failures.Range(failures, $"{WebhookOptions.Section}:MaxBacklog", o.MaxBacklog, 100, TopicOptionsValidator.MaxHistorySize);
        foreach (var (endpoint, e) in o.Endpoints)
        {
            var key = $"{WebhookOptions.Section}:Endpoints:{endpoint}";
            if (endpoint.Length == 0 || endpoint.Contains('|', StringComparison.Ordinal))
            {
                failures.Add($"{key}: an endpoint's name is not empty and has no '|'.");
            }

            if (!Uri.TryCreate(e.Url, UriKind.Absolute, out var url) || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
            {
                failures.Add($"{key}:Url must be an absolute http or https URL (is '{e.Url}').");
            }

            if (e.Secret is null || e.Secret.Length < 32)
            {
                failures.Add($"{key}:Secret must be at least 32 characters.");
            }

            foreach (var type in e.Events.Where(t => Array.IndexOf(WebhookEventTypes.All, t) < 0))
            {
                failures.Add($"{key}:Events: '{type}' is not an event type ({string.Join(", ", WebhookEventTypes.All)}).");
            }

            Failures.Range(failures, key + ":MaxAge", e.MaxAge, TimeSpan.FromSeconds(1), TimeSpan.FromDays(7));
        }

        return Failures.Result(failures);
    }
}
