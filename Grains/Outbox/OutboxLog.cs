using Microsoft.Extensions.Logging;

namespace OrleansPush.Grains.Outbox;

internal static partial class OutboxLog
{
    [LoggerMessage(EventId = 1101, Level = LogLevel.Information,
        Message = "This silo now consumes the outbox {Table} (process {ProcessId}); the other silos wait to take over")]
    public static partial void Leading(ILogger logger, string table, int processId);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Warning,
        Message = "The outbox consumer lost its database connection or failed; it tries again in {Delay}")]
    public static partial void Failed(ILogger logger, TimeSpan delay, Exception exception);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Warning,
        Message = "Publishing outbox row {Id} to {Topic} failed; it is tried again in {Delay} with the same idempotency key")]
    public static partial void PublishRetry(ILogger logger, long id, string topic, TimeSpan delay, Exception exception);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Error,
        Message = "Outbox row {Id} to {Topic} was refused ({Code}: {Reason}); it was moved to {Refused}")]
    public static partial void Refused(ILogger logger, long id, string topic, string code, string reason, string refused);
}
