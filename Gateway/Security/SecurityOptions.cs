using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Security;

/// <summary>Token validation (<c>OrleansPush:Auth</c>). With neither <see cref="JwtOptions.SigningKey"/> nor
/// <see cref="JwtOptions.PublicKeyFile"/> set the gateway runs open (development only, and it says so at start).</summary>
public sealed class AuthOptions
{
    public const string Section = "OrleansPush:Auth";

    public JwtOptions Jwt { get; set; } = new();

    /// <summary>True when a key is configured: every connection and every API call must then carry a valid token.</summary>
    public bool Secured => !string.IsNullOrWhiteSpace(Jwt.SigningKey) || !string.IsNullOrWhiteSpace(Jwt.PublicKeyFile);
}

public sealed class JwtOptions
{
    public const int MinimumKeyBytes = 32;
    public static readonly TimeSpan DefaultClockSkew = TimeSpan.FromSeconds(30);

    /// <summary>HS256 key: base64 (decoding to at least 32 bytes) or plain text of at least 32 UTF-8 bytes.</summary>
    public string? SigningKey { get; set; }

    /// <summary>A PEM file with an RSA (RS256) or EC (ES256) public key.</summary>
    public string? PublicKeyFile { get; set; }

    /// <summary>When set, a token's <c>iss</c> must equal it.</summary>
    public string? Issuer { get; set; }

    /// <summary>When set, a token's <c>aud</c> must contain it.</summary>
    public string? Audience { get; set; }

    /// <summary>Tolerance for clocks that disagree, applied to <c>exp</c> and <c>nbf</c>.</summary>
    public TimeSpan ClockSkew { get; set; } = DefaultClockSkew;

    /// <summary>The HS256 key's bytes: base64 when the text is valid base64 of at least 32 bytes, else its UTF-8.</summary>
    internal byte[]? SymmetricKeyBytes()
    {
        if (string.IsNullOrWhiteSpace(SigningKey))
        {
            return null;
        }

        var buffer = new byte[SigningKey.Length];
        return Convert.TryFromBase64String(SigningKey, buffer, out var written) && written >= MinimumKeyBytes
            ? buffer[..written]
            : Encoding.UTF8.GetBytes(SigningKey);
    }
}

/// <summary>Per-connection and per-gateway limits (<c>OrleansPush:Limits</c>). Each has a default; 0 turns one off.
/// Breaches answer <c>rate_limited</c> (HTTP 429) and go to the audit log.</summary>
public sealed class LimitsOptions
{
    public const string Section = "OrleansPush:Limits";
    public const int DefaultMessagesPerSecond = 100;
    public const int DefaultMessageBurst = 200;
    public const int DefaultConnectionsPerUser = 100;
    public const int DefaultConnectionsPerIp = 10_000;
    public const int DefaultHandshakesPerSecond = 2_000;

    /// <summary>Frames (raw protocol) or hub invocations (SignalR) a connection may send per second, on average.</summary>
    public int MessagesPerSecond { get; set; } = DefaultMessagesPerSecond;

    /// <summary>How many a connection may send at once before the per-second rate applies.</summary>
    public int MessageBurst { get; set; } = DefaultMessageBurst;

    public static readonly TimeSpan DefaultConnectionsPerUserWait = TimeSpan.FromSeconds(2);

    /// <summary>Open connections of one user (token <c>sub</c>, or <c>?user=</c> in open mode) across the cluster,
    /// counted by the user's grain over every gateway (and, as a backstop that needs no grain, on each gateway).</summary>
    public int ConnectionsPerUser { get; set; } = DefaultConnectionsPerUser;

    /// <summary>How long a connect waits for the user's grain to count the user's connections across the cluster.</summary>
    public TimeSpan ConnectionsPerUserWait { get; set; } = DefaultConnectionsPerUserWait;

    /// <summary>What a connect does when the user's grain does not answer within <see cref="ConnectionsPerUserWait"/>:
    /// <see cref="UnreachablePolicy.Open"/> (the default) admits it, held only by this gateway's own count;
    /// <see cref="UnreachablePolicy.Closed"/> refuses it with 503 <c>unavailable</c>.</summary>
    public UnreachablePolicy ConnectionsPerUserWhenUnreachable { get; set; } = UnreachablePolicy.Open;

    /// <summary>Open connections from one IP address on this gateway.</summary>
    public int ConnectionsPerIp { get; set; } = DefaultConnectionsPerIp;

    /// <summary>New connections this gateway accepts per second (WebSocket upgrades, SSE streams, polls, SignalR
    /// negotiations), whoever opens them: a reconnect storm is spread out instead of swamping the cluster.</summary>
    public int HandshakesPerSecond { get; set; } = DefaultHandshakesPerSecond;
}

/// <summary>What a limit that the cluster counts does when the cluster does not answer in time.</summary>
public enum UnreachablePolicy
{
    /// <summary>Fail open: admit (availability first; the gateway's own count still holds).</summary>
    Open,

    /// <summary>Fail closed: refuse with <c>unavailable</c> (the limit first).</summary>
    Closed,
}

/// <summary>Which browser origins may open a push connection (<c>OrleansPush:AllowedOrigins</c>, exact match, e.g.
/// <c>https://app.example.com</c>). Empty: any. Requests without an <c>Origin</c> header (non-browser clients) pass.</summary>
public sealed class OriginOptions
{
    public const string Key = "OrleansPush:AllowedOrigins";

    public string[] AllowedOrigins { get; set; } = [];
}

internal sealed class AuthOptionsValidator : IValidateOptions<AuthOptions>
{
    public ValidateOptionsResult Validate(string? name, AuthOptions o)
    {
        var failures = new List<string>();
        var jwt = o.Jwt;
        if (!string.IsNullOrWhiteSpace(jwt.SigningKey) && !string.IsNullOrWhiteSpace(jwt.PublicKeyFile))
        {
            failures.Add($"Set one of {AuthOptions.Section}:Jwt:SigningKey and {AuthOptions.Section}:Jwt:PublicKeyFile, not both.");
        }

        if (jwt.SymmetricKeyBytes() is { } key && key.Length < JwtOptions.MinimumKeyBytes)
        {
            failures.Add($"{AuthOptions.Section}:Jwt:SigningKey must be at least {JwtOptions.MinimumKeyBytes} bytes (base64 or plain text); it is {key.Length}.");
        }

        if (!string.IsNullOrWhiteSpace(jwt.PublicKeyFile))
        {
            try
            {
                using var loaded = TokenKeys.LoadPublicKey(jwt.PublicKeyFile);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
            {
                failures.Add($"{AuthOptions.Section}:Jwt:PublicKeyFile could not be read as an RSA or EC public key in PEM: {ex.Message}");
            }
        }

        if (jwt.ClockSkew < TimeSpan.Zero || jwt.ClockSkew > TimeSpan.FromMinutes(10))
        {
            failures.Add($"{AuthOptions.Section}:Jwt:ClockSkew must be between 0 and 10 minutes.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

internal sealed class LimitsOptionsValidator : IValidateOptions<LimitsOptions>
{
    public ValidateOptionsResult Validate(string? name, LimitsOptions o)
    {
        var failures = new List<string>();
        Check(o.MessagesPerSecond, nameof(o.MessagesPerSecond));
        Check(o.MessageBurst, nameof(o.MessageBurst));
        Check(o.ConnectionsPerUser, nameof(o.ConnectionsPerUser));
        Check(o.ConnectionsPerIp, nameof(o.ConnectionsPerIp));
        Check(o.HandshakesPerSecond, nameof(o.HandshakesPerSecond));
        if (o.ConnectionsPerUserWait <= TimeSpan.Zero || o.ConnectionsPerUserWait > TimeSpan.FromSeconds(30))
        {
            failures.Add($"{LimitsOptions.Section}:ConnectionsPerUserWait must be more than 0 and at most 00:00:30 (is {o.ConnectionsPerUserWait}).");
        }

        if (!Enum.IsDefined(o.ConnectionsPerUserWhenUnreachable))
        {
            failures.Add($"{LimitsOptions.Section}:ConnectionsPerUserWhenUnreachable must be Open or Closed (is {o.ConnectionsPerUserWhenUnreachable}).");
        }

        if (o.MessagesPerSecond > 0 && o.MessageBurst > 0 && o.MessageBurst < o.MessagesPerSecond)
        {
            failures.Add($"{LimitsOptions.Section}:MessageBurst must be at least MessagesPerSecond ({o.MessagesPerSecond}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);

        void Check(int value, string key)
        {
            if (value < 0)
            {
                failures.Add($"{LimitsOptions.Section}:{key} must be 0 (off) or more (is {value}).");
            }
        }
    }
}

internal sealed class OriginOptionsValidator : IValidateOptions<OriginOptions>
{
    public ValidateOptionsResult Validate(string? name, OriginOptions o)
    {
        foreach (var origin in o.AllowedOrigins)
        {
            if (!Uri.TryCreate(origin, UriKind.Absolute, out var uri) || uri.AbsolutePath != "/" || origin.EndsWith('/'))
            {
                return ValidateOptionsResult.Fail($"{OriginOptions.Key} holds \"{origin}\": an origin is scheme://host[:port], with no path or trailing slash.");
            }
        }

        return ValidateOptionsResult.Success;
    }
}
