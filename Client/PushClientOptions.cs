namespace OrleansPush.Client;

/// <summary>Options of a <see cref="PushClient"/>.</summary>
public sealed class PushClientOptions
{
    public static readonly TimeSpan DefaultReconnectBaseDelay = TimeSpan.FromMilliseconds(500);
    public static readonly TimeSpan DefaultReconnectMaxDelay = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan DefaultRequestTimeout = TimeSpan.FromSeconds(15);
    public static readonly TimeSpan DefaultKeepAliveInterval = TimeSpan.FromSeconds(20);

    /// <summary>The gateway's raw WebSocket endpoint, e.g. <c>wss://push.example.com/ws</c>.</summary>
    public required Uri Url { get; set; }

    /// <summary>Other gateways' WebSocket endpoints. After a lost connection, a <c>bye</c> or a failed connect, the client
    /// tries the next address in turn (<see cref="Url"/>, then these, round again), so the clients of a gateway that
    /// died or drains move to the others even without a load balancer in front.</summary>
    public IList<Uri> FallbackUrls { get; set; } = [];

    /// <summary>Called before each connect; its token is sent as the <c>access_token</c> query parameter.</summary>
    public Func<CancellationToken, ValueTask<string?>>? AccessTokenProvider { get; set; }

    /// <summary>Development identity (<c>?user=</c>), for gateways that allow it.</summary>
    public string? User { get; set; }

    /// <summary>The first reconnect delay; each failed attempt doubles it, up to <see cref="ReconnectMaxDelay"/>. Every
    /// delay is jittered (between half and all of it) so that clients of a failed gateway do not return in one wave.</summary>
    public TimeSpan ReconnectBaseDelay { get; set; } = DefaultReconnectBaseDelay;

    public TimeSpan ReconnectMaxDelay { get; set; } = DefaultReconnectMaxDelay;

    /// <summary>How long a request (subscribe, publish, ...) waits for its answer.</summary>
    public TimeSpan RequestTimeout { get; set; } = DefaultRequestTimeout;

    public TimeSpan KeepAliveInterval { get; set; } = DefaultKeepAliveInterval;

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(Url);
        if (Url.Scheme is not ("ws" or "wss"))
        {
            throw new ArgumentException("PushClientOptions.Url must be a ws:// or wss:// address.", nameof(Url));
        }

        foreach (var fallback in FallbackUrls)
        {
            if (fallback is null || fallback.Scheme is not ("ws" or "wss"))
            {
                throw new ArgumentException("PushClientOptions.FallbackUrls must hold ws:// or wss:// addresses.", nameof(FallbackUrls));
            }
        }

        if (ReconnectBaseDelay <= TimeSpan.Zero || ReconnectMaxDelay < ReconnectBaseDelay)
        {
            throw new ArgumentException("PushClientOptions: ReconnectBaseDelay must be positive and at most ReconnectMaxDelay.", nameof(ReconnectBaseDelay));
        }

        if (RequestTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("PushClientOptions.RequestTimeout must be positive.", nameof(RequestTimeout));
        }
    }
}
