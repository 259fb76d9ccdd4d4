using Microsoft.Extensions.Logging;

namespace OrleansPush.Grains;

internal static partial class GrainsLog
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning,
        Message = "Routing a message of {Topic} to gateway {GatewayId} failed; the gateway will repair the gap from history")]
    public static partial void RouteFailed(ILogger logger, string topic, string gatewayId, Exception exception);
}
