namespace OrleansPush.Gateway.Transports.Mqtt;

internal static partial class MqttLog
{
    [LoggerMessage(EventId = 2200, Level = LogLevel.Information, Message = "MQTT over TCP listens on {Address}:{Port}")]
    public static partial void TcpListening(ILogger logger, string address, int port);

    [LoggerMessage(EventId = 2201, Level = LogLevel.Error,
        Message = "MQTT over TCP cannot listen on {Address}:{Port} (OrleansPush:Mqtt:Port / BindAddress); the gateway runs without it")]
    public static partial void TcpListenFailed(ILogger logger, string address, int port, Exception exception);

    [LoggerMessage(EventId = 2202, Level = LogLevel.Information, Message = "MQTT over TCP is off (OrleansPush:Mqtt:Port is 0)")]
    public static partial void TcpOff(ILogger logger);

    [LoggerMessage(EventId = 2203, Level = LogLevel.Debug, Message = "MQTT connection {ConnectionId}: a publish to {Topic} was refused ({Code})")]
    public static partial void PublishRefused(ILogger logger, string connectionId, string topic, string code);

    [LoggerMessage(EventId = 2204, Level = LogLevel.Warning,
        Message = "MQTT client {ClientId} resumed {Topic} after seq {Seq}, which history no longer holds; it continues at {Epoch}:{Head}")]
    public static partial void ResumeNotRecovered(ILogger logger, string clientId, string topic, long seq, string epoch, long head);

    [LoggerMessage(EventId = 2205, Level = LogLevel.Warning,
        Message = "MQTT client {ClientId}: its positions are not kept for a resume (OrleansPush:Mqtt:MaxResumableSessions reached)")]
    public static partial void ResumeDropped(ILogger logger, string clientId);

    [LoggerMessage(EventId = 2206, Level = LogLevel.Warning, Message = "MQTT broker: {Message}")]
    public static partial void Broker(ILogger logger, string message, Exception? exception);

    [LoggerMessage(EventId = 2207, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: topic {Topic} matches a wildcard filter but was left out: {Reason}")]
    public static partial void WildcardTopicSkipped(ILogger logger, string clientId, string topic, string reason);

    [LoggerMessage(EventId = 2208, Level = LogLevel.Warning, Message = "MQTT client {ClientId}: its will to {Topic} was not published ({Code})")]
    public static partial void WillRefused(ILogger logger, string clientId, string topic, string code);

    [LoggerMessage(EventId = 2209, Level = LogLevel.Warning, Message = "MQTT client {ClientId}: its session's subscription {Filter} was not restored: {Reason}")]
    public static partial void RestoreRefused(ILogger logger, string clientId, string filter, string reason);
}
