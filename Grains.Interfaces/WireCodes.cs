namespace OrleansPush;

/// <summary>The protocol words a gateway says to clients about their connections and subscriptions (DESIGN.md), named
/// once: close reasons (<c>bye</c>, or an error before closing), and why a subscription ended (<c>reset</c>).</summary>
public static class WireCodes
{
    /// <summary>A request the gateway cannot read (a malformed frame, a missing field, a bad parameter). The connection
    /// stays open.</summary>
    public const string BadRequest = "bad_request";

    /// <summary>A topic name that breaks the naming rule.</summary>
    public const string BadTopic = "bad_topic";

    /// <summary>No valid token, an expired one, or one revoked: reconnect with a fresh token.</summary>
    public const string Unauthorized = "unauthorized";

    /// <summary>The token (or the namespace) does not grant this.</summary>
    public const string Forbidden = "forbidden";

    /// <summary>A frame or payload over the size limit.</summary>
    public const string TooLarge = "too_large";

    /// <summary>A limit was reached (messages per second, connections, handshakes): slow down and retry.</summary>
    public const string RateLimited = "rate_limited";

    /// <summary>An operator closed the user's connections (<c>POST /api/admin/users/{id}/disconnect</c>).</summary>
    public const string Disconnected = "disconnected";

    /// <summary>The client did not read fast enough: its outbound queue reached the bound, or its writer made no
    /// progress while a catch-up waited for it. Reconnect and resume.</summary>
    public const string Slow = "slow";

    /// <summary>The gateway is draining. Reconnect elsewhere and resume.</summary>
    public const string Shutdown = "shutdown";

    /// <summary>The gateway could not serve the connection (a message it could not encode for this transport, a
    /// request that failed). Try again.</summary>
    public const string Unavailable = "unavailable";

    /// <summary>A message this subscription missed cannot be filled from history: the subscription has ended;
    /// subscribe again with <c>since</c>, whose answer says what could be recovered.</summary>
    public const string InsufficientState = "insufficient_state";
}
