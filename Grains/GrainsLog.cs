using Microsoft.Extensions.Logging;

namespace OrleansPush.Grains;

internal static partial class GrainsLog
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning,
        Message = "Routing a message of {Topic} to gateway {GatewayId} failed; the gateway will repair the gap from history")]
    public static partial void RouteFailed(ILogger logger, string topic, string gatewayId, Exception exception);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Error,
        Message = "Storing {Count} message(s) of {Topic} failed; the grain reads its position back from the store to learn whether they were")]
    public static partial void AppendFailed(ILogger logger, string topic, int count, Exception exception);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning,
        Message = "The directory of namespace {Namespace} holds {Max} topics: newer topics are not announced to wildcard subscribers")]
    public static partial void DirectoryFull(ILogger logger, string @namespace, int max);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Warning,
        Message = "Announcing {Topic} to its namespace's directory failed; wildcard subscribers see it once a gateway renews its watch")]
    public static partial void AnnounceFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Warning,
        Message = "An append to the history of {Topic} was refused: {Reason}; the grain reads its position back from the store")]
    public static partial void AppendConflict(ILogger logger, string topic, string reason);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Warning,
        Message = "Storing {Count} message(s) of {Topic} failed without an answer; trying the same append again")]
    public static partial void AppendUncertain(ILogger logger, string topic, int count, Exception exception);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Error,
        Message = "Reading the position of {Topic} back from the history store failed; its publishers hear that it was not, or may have been, published")]
    public static partial void ReloadFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Warning,
        Message = "Looking up an idempotency key of {Topic} in the history store failed; the publish was refused as not published")]
    public static partial void KeyLookupFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Warning,
        Message = "Storing the subscriptions of user {UserId} failed; the change was undone and its caller told")]
    public static partial void UserStateWriteFailed(ILogger logger, string userId, Exception exception);
}
