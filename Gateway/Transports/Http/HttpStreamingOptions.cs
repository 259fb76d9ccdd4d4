using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Transports.Http;

/// <summary>Server-Sent Events (<c>OrleansPush:Sse</c>).</summary>
public sealed class SseOptions
{
    public const string Section = "OrleansPush:Sse";
    public const int DefaultMaxTopics = 100;
    public static readonly TimeSpan DefaultHeartbeatInterval = TimeSpan.FromSeconds(15);

    /// <summary>How often an idle stream gets a <c>: ping</c> comment line, so that proxies do not close it.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = DefaultHeartbeatInterval;

    /// <summary>Most topics one stream may name. Every event id carries a position per topic, so this also bounds
    /// the size of an id (and of the <c>Last-Event-ID</c> header a reconnect sends).</summary>
    public int MaxTopics { get; set; } = DefaultMaxTopics;
}

/// <summary>Long polling (<c>OrleansPush:LongPolling</c>).</summary>
public sealed class LongPollingOptions
{
    public const string Section = "OrleansPush:LongPolling";
    public const int DefaultMaxTopics = 100;
    public const int DefaultMaxMessages = 1000;
    public static readonly TimeSpan DefaultWait = TimeSpan.FromSeconds(25);

    /// <summary>How long a poll with nothing newer waits for the next message before it answers with an empty list.</summary>
    public TimeSpan Wait { get; set; } = DefaultWait;

    public int MaxTopics { get; set; } = DefaultMaxTopics;

    /// <summary>Most messages in one answer; the answer's positions say where the next poll continues.</summary>
    public int MaxMessages { get; set; } = DefaultMaxMessages;
}

internal sealed class SseOptionsValidator : IValidateOptions<SseOptions>
{
    public ValidateOptionsResult Validate(string? name, SseOptions o)
    {
        var failures = new List<string>();
        if (o.HeartbeatInterval < TimeSpan.FromMilliseconds(100) || o.HeartbeatInterval > TimeSpan.FromMinutes(10))
        {
            failures.Add($"{SseOptions.Section}:HeartbeatInterval must be between 00:00:00.1 and 00:10:00 (is {o.HeartbeatInterval}).");
        }

        if (o.MaxTopics is < 1 or > 1000)
        {
            failures.Add($"{SseOptions.Section}:MaxTopics must be between 1 and 1000 (is {o.MaxTopics}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

internal sealed class LongPollingOptionsValidator : IValidateOptions<LongPollingOptions>
{
    public ValidateOptionsResult Validate(string? name, LongPollingOptions o)
    {
        var failures = new List<string>();
        if (o.Wait < TimeSpan.Zero || o.Wait > TimeSpan.FromMinutes(5))
        {
            failures.Add($"{LongPollingOptions.Section}:Wait must be between 00:00:00 and 00:05:00 (is {o.Wait}).");
        }

        if (o.MaxTopics is < 1 or > 1000)
        {
            failures.Add($"{LongPollingOptions.Section}:MaxTopics must be between 1 and 1000 (is {o.MaxTopics}).");
        }

        if (o.MaxMessages is < 1 or > 100_000)
        {
            failures.Add($"{LongPollingOptions.Section}:MaxMessages must be between 1 and 100000 (is {o.MaxMessages}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
