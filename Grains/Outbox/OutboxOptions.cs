using Microsoft.Extensions.Options;
using OrleansPush.Hosting;

namespace OrleansPush.Grains.Outbox;

/// <summary>The transactional outbox (<c>OrleansPush:Outbox</c>): a PostgreSQL table backends insert into in their own
/// transaction, published by one silo at a time. Needs <c>OrleansPush:Storage:Provider=Postgres</c>.</summary>
public sealed class OutboxOptions
{
    public const string Section = "OrleansPush:Outbox";

    /// <summary>Creates <c>{prefix}_outbox</c> and runs its consumer on this silo (one silo of the cluster consumes at a
    /// time; the others wait to take over).</summary>
    public bool Enabled { get; set; }

    /// <summary>Rows read and published per round.</summary>
    public int BatchSize { get; set; } = 500;

    /// <summary>The longest wait between two attempts to publish a row whose topic is unavailable, or to reach the
    /// database again.</summary>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long one publish may stay unanswered before it is tried again (with the same idempotency key, so
    /// the retry cannot publish twice).</summary>
    public TimeSpan PublishAttemptTimeout { get; set; } = TimeSpan.FromSeconds(10);
}

public sealed class OutboxOptionsValidator(StorageProvider provider) : IValidateOptions<OutboxOptions>
{
    public ValidateOptionsResult Validate(string? name, OutboxOptions o)
    {
        var failures = new List<string>();
        if (o.Enabled && provider != StorageProvider.Postgres)
        {
            failures.Add($"{OutboxOptions.Section}:Enabled needs {StorageOptions.Section}:Provider=Postgres (is {provider}).");
        }

        if (o.BatchSize is < 1 or > 10_000)
        {
            failures.Add($"{OutboxOptions.Section}:BatchSize must be between 1 and 10000 (is {o.BatchSize}).");
        }

        if (o.MaxRetryDelay < TimeSpan.FromMilliseconds(10) || o.MaxRetryDelay > TimeSpan.FromMinutes(5))
        {
            failures.Add($"{OutboxOptions.Section}:MaxRetryDelay must be between 00:00:00.010 and 00:05:00 (is {o.MaxRetryDelay}).");
        }

        if (o.PublishAttemptTimeout < TimeSpan.FromMilliseconds(100) || o.PublishAttemptTimeout > TimeSpan.FromMinutes(5))
        {
            failures.Add($"{OutboxOptions.Section}:PublishAttemptTimeout must be between 00:00:00.100 and 00:05:00 (is {o.PublishAttemptTimeout}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
