namespace OrleansPush.Gateway;

internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 2001, Level = LogLevel.Information, Message = "Gateway {GatewayId} consumes its stream")]
    public static partial void StreamSubscribed(ILogger logger, string gatewayId);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "The stream subscription of gateway {GatewayId} was gone; subscribed again")]
    public static partial void StreamResubscribed(ILogger logger, string gatewayId);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Warning, Message = "The gateway stream reported an error")]
    public static partial void StreamError(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Warning, Message = "Renewing leases failed")]
    public static partial void RenewFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Warning, Message = "Renewing the lease of {Topic} failed")]
    public static partial void LeaseRenewFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 2060, Level = LogLevel.Warning,
        Message = "User {UserId}: the server-side subscription of {Topic} was repaired from the user grain's list (subscribed: {Subscribed}); its change event had not arrived")]
    public static partial void UserSubscriptionReconciled(ILogger logger, string userId, string topic, bool subscribed);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Debug, Message = "Dropping the lease of {Topic} failed; it will lapse by itself")]
    public static partial void RemoveInterestFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 2040, Level = LogLevel.Debug, Message = "Giving back the lease of user {UserId} failed; it will lapse by itself")]
    public static partial void UserDetachFailed(ILogger logger, string userId, Exception exception);

    [LoggerMessage(EventId = 2007, Level = LogLevel.Warning, Message = "Registering interest in {Topic} failed")]
    public static partial void RegisterFailed(ILogger logger, string topic, Exception? exception);

    [LoggerMessage(EventId = 2008, Level = LogLevel.Error, Message = "A fan-out command ({Command}) failed")]
    public static partial void ShardCommandFailed(ILogger logger, string command, Exception exception);

    [LoggerMessage(EventId = 2009, Level = LogLevel.Warning, Message = "Topic {Topic} changed epoch from {OldEpoch} to {NewEpoch}: its history was lost")]
    public static partial void EpochChanged(ILogger logger, string topic, string oldEpoch, string newEpoch);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Warning, Message = "Topic {Topic}: seq {From}..{To} are no longer in history; the subscribers that missed them are told")]
    public static partial void GapUnfillable(ILogger logger, string topic, long from, long to);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Warning, Message = "Topic {Topic}: reading a gap from history failed (attempt {Attempt}); trying again")]
    public static partial void GapFillFailed(ILogger logger, string topic, int attempt, Exception? exception);

    [LoggerMessage(EventId = 2012, Level = LogLevel.Warning, Message = "Topic {Topic}: reading history for a resume failed")]
    public static partial void ReplayFailed(ILogger logger, string topic, Exception? exception);

    [LoggerMessage(EventId = 2014, Level = LogLevel.Warning, Message = "Topic {Topic}: reading history for a catch-up failed (attempt {Attempt}); trying again")]
    public static partial void CatchUpReadFailed(ILogger logger, string topic, int attempt, Exception? exception);

    [LoggerMessage(EventId = 2015, Level = LogLevel.Warning, Message = "Topic {Topic}: seq {Seq} could not be encoded for {Transport}; those connections are closed")]
    public static partial void EncodingFailed(ILogger logger, string topic, long seq, string transport, Exception exception);

    [LoggerMessage(EventId = 2016, Level = LogLevel.Warning, Message = "A fan-out shard's inbox is full: stream events are dropped ({Dropped} so far) and filled from history")]
    public static partial void ShardInboxFull(ILogger logger, long dropped);

    [LoggerMessage(EventId = 2013, Level = LogLevel.Warning, Message = "Topic {Topic}: reporting presence failed")]
    public static partial void PresenceReportFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 2020, Level = LogLevel.Information, Message = "Connection {ConnectionId} ({Transport}) from {Remote} closed by the server: {Reason}")]
    public static partial void ConnectionClosed(ILogger logger, string connectionId, string transport, string? remote, string reason);

    [LoggerMessage(EventId = 2021, Level = LogLevel.Warning, Message = "Connection {ConnectionId}: a request failed unexpectedly")]
    public static partial void RequestFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(EventId = 2022, Level = LogLevel.Warning, Message = "Publishing to {Topic} failed")]
    public static partial void PublishFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(EventId = 2040, Level = LogLevel.Information, Message = "Publishing to {Topic} is tried again (attempt {Attempt} got no answer or failed)")]
    public static partial void PublishRetried(ILogger logger, string topic, int attempt, Exception exception);

    [LoggerMessage(EventId = 2023, Level = LogLevel.Warning, Message = "Applying a server-side subscription change of {Topic} to connection {ConnectionId} failed")]
    public static partial void ServerSubscriptionFailed(ILogger logger, string topic, string connectionId, Exception exception);

    [LoggerMessage(EventId = 2030, Level = LogLevel.Warning,
        Message = "OrleansPush gateway runs OPEN: no token is required and ?user= names a connection's user. Fine for development, never for production.")]
    public static partial void RunningOpen(ILogger logger);

    [LoggerMessage(EventId = 2031, Level = LogLevel.Information, Message = "Embedded silo started (silo port {SiloPort}, gateway port {GatewayPort})")]
    public static partial void EmbeddedSiloStarted(ILogger logger, int siloPort, int gatewayPort);
}
