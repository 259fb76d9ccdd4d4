namespace OrleansPush.Gateway.Security;

/// <summary>
/// The audit trail: refused tokens, refused origins, forbidden subscribes and publishes, limit breaches and admin
/// actions, each with who (user id or <c>-</c>), what and from where (remote address, transport or path), on the
/// dedicated log category <see cref="Category"/> so it can be routed and kept apart. Never a token, never a payload.
/// </summary>
public sealed partial class SecurityAudit(ILoggerFactory loggers)
{
    public const string Category = "OrleansPush.Audit";
    private readonly ILogger _audit = loggers.CreateLogger(Category);

    public void TokenRefused(string reason, string where, string? remote)
    {
        Observability.GatewayMetrics.AuthFailed(reason);
        LogTokenRefused(_audit, reason, where, remote ?? "-");
    }

    public void OriginRefused(string origin, string where, string? remote) => LogOriginRefused(_audit, origin, where, remote ?? "-");

    public void SubscribeForbidden(string? user, string topic, string transport, string? remote) =>
        LogSubscribeForbidden(_audit, user ?? "-", topic, transport, remote ?? "-");

    public void PublishForbidden(string? user, string topic, string where, string? remote) =>
        LogPublishForbidden(_audit, user ?? "-", topic, where, remote ?? "-");

    /// <summary>A client's publish was refused and, since its protocol cannot say so (MQTT 3.1.1 has no negative PUBACK),
    /// its connection closed instead of acknowledging the publish.</summary>
    public void PublishRefusedConnectionClosed(string? user, string topic, string code, string where, string? remote) =>
        LogPublishRefusedConnectionClosed(_audit, user ?? "-", topic, code, where, remote ?? "-");

    public void LimitExceeded(string limit, string? user, string where, string? remote) =>
        LogLimitExceeded(_audit, limit, user ?? "-", where, remote ?? "-");

    public void TokenExpired(string? user, string connectionId, string? remote) => LogTokenExpired(_audit, user ?? "-", connectionId, remote ?? "-");

    public void TokenRefreshed(string? user, string connectionId, DateTimeOffset? expiresAt) =>
        LogTokenRefreshed(_audit, user ?? "-", connectionId, expiresAt);

    public void TokenRevoked(string? user, string connectionId, string? remote) => LogTokenRevoked(_audit, user ?? "-", connectionId, remote ?? "-");

    public void AdminAction(string? user, string action, string target, string? remote) =>
        LogAdminAction(_audit, user ?? "-", action, target, remote ?? "-");

    public void AdminForbidden(string? user, string action, string target, string? remote) =>
        LogAdminForbidden(_audit, user ?? "-", action, target, remote ?? "-");

    [LoggerMessage(EventId = 2311, Level = LogLevel.Warning,
        Message = "Publish by {User} to {Topic} refused ({Code}) on {Where} from {Remote}; the connection was closed (the protocol has no refusal)")]
    private static partial void LogPublishRefusedConnectionClosed(ILogger logger, string user, string topic, string code, string where, string remote);

    [LoggerMessage(EventId = 2300, Level = LogLevel.Warning, Message = "Token refused ({Reason}) on {Where} from {Remote}")]
    private static partial void LogTokenRefused(ILogger logger, string reason, string where, string remote);

    [LoggerMessage(EventId = 2301, Level = LogLevel.Warning, Message = "Origin {Origin} refused on {Where} from {Remote}")]
    private static partial void LogOriginRefused(ILogger logger, string origin, string where, string remote);

    [LoggerMessage(EventId = 2302, Level = LogLevel.Warning, Message = "Subscribe forbidden: user {User} to {Topic} over {Transport} from {Remote}")]
    private static partial void LogSubscribeForbidden(ILogger logger, string user, string topic, string transport, string remote);

    [LoggerMessage(EventId = 2303, Level = LogLevel.Warning, Message = "Publish forbidden: user {User} to {Topic} over {Where} from {Remote}")]
    private static partial void LogPublishForbidden(ILogger logger, string user, string topic, string where, string remote);

    [LoggerMessage(EventId = 2304, Level = LogLevel.Warning, Message = "Limit {Limit} exceeded by user {User} on {Where} from {Remote}")]
    private static partial void LogLimitExceeded(ILogger logger, string limit, string user, string where, string remote);

    [LoggerMessage(EventId = 2305, Level = LogLevel.Information, Message = "Token of user {User} expired: connection {ConnectionId} from {Remote} closed")]
    private static partial void LogTokenExpired(ILogger logger, string user, string connectionId, string remote);

    [LoggerMessage(EventId = 2306, Level = LogLevel.Information, Message = "Token of user {User} refreshed on connection {ConnectionId}; now expires {ExpiresAt}")]
    private static partial void LogTokenRefreshed(ILogger logger, string user, string connectionId, DateTimeOffset? expiresAt);

    [LoggerMessage(EventId = 2309, Level = LogLevel.Information, Message = "Tokens of user {User} revoked: connection {ConnectionId} from {Remote} closed")]
    private static partial void LogTokenRevoked(ILogger logger, string user, string connectionId, string remote);

    [LoggerMessage(EventId = 2307, Level = LogLevel.Information, Message = "Admin action by {User}: {Action} {Target} from {Remote}")]
    private static partial void LogAdminAction(ILogger logger, string user, string action, string target, string remote);

    [LoggerMessage(EventId = 2308, Level = LogLevel.Warning, Message = "Admin action forbidden: user {User} tried {Action} {Target} from {Remote}")]
    private static partial void LogAdminForbidden(ILogger logger, string user, string action, string target, string remote);
}

internal static partial class SecurityLog
{
    [LoggerMessage(EventId = 2350, Level = LogLevel.Information, Message = "Tokens required: {Algorithm} key{Issuer}{Audience}")]
    public static partial void Secured(ILogger logger, string algorithm, string issuer, string audience);

    [LoggerMessage(EventId = 2351, Level = LogLevel.Warning, Message = "Checking token expiry failed")]
    public static partial void ExpirySweepFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 2352, Level = LogLevel.Warning, Message = "The grain of user {User} did not count the connection in time; failing {Policy}")]
    public static partial void UserCountUnreachable(ILogger logger, string user, string policy, Exception exception);

    [LoggerMessage(EventId = 2353, Level = LogLevel.Warning, Message = "Reporting the connections of user {User} to its grain failed")]
    public static partial void UserCountReportFailed(ILogger logger, string user, Exception exception);
}
