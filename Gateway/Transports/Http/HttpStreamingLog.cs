namespace OrleansPush.Gateway;

/// <summary>Log events of the Server-Sent Events and long-polling transports (ids 2100-2119).</summary>
internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 2100, Level = LogLevel.Warning, Message = "SSE stream {ConnectionId}: subscribing failed unexpectedly")]
    public static partial void SseSubscribeFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Warning, Message = "Poll {ConnectionId} failed unexpectedly")]
    public static partial void PollFailed(ILogger logger, string connectionId, Exception exception);
}
