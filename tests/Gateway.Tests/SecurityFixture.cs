using System.Collections.Concurrent;
using System.Net;
using System.Net.WebSockets;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Tests;

/// <summary>
/// An embedded gateway that requires tokens (HS256, with issuer and audience), allows one browser origin, has small
/// limits so they can be reached, and captures every log line it writes (through the gateway's own redaction) so the
/// tests can check no token ever reaches a log. Each test uses topics and users of its own.
/// </summary>
public sealed class SecurityFixture : IAsyncLifetime
{
    public const string Issuer = "https://issuer.test";
    public const string Audience = "orleanspush-test";
    public const string AllowedOrigin = "https://app.example.com";
    public const int MessagesPerSecond = 20;
    public const int ConnectionsPerUser = 3;
    public static readonly byte[] Key = [.. Enumerable.Range(0, 32).Select(i => (byte)(i * 7 + 3))];
    private readonly ConcurrentQueue<string> _tokens = new();

    public SecureGateway Gateway { get; private set; } = null!;

    public LogCapture Logs { get; } = new();

    /// <summary>Every token minted so far (for the log scan).</summary>
    public IEnumerable<string> Tokens => _tokens;

    public async Task InitializeAsync() => Gateway = await SecureGateway.StartAsync(Logs, new Dictionary<string, string?>
    {
        ["OrleansPush:Auth:Jwt:SigningKey"] = Convert.ToBase64String(Key),
        ["OrleansPush:Auth:Jwt:Issuer"] = Issuer,
        ["OrleansPush:Auth:Jwt:Audience"] = Audience,
        ["OrleansPush:Auth:Jwt:ClockSkew"] = "00:00:00",
        ["OrleansPush:AllowedOrigins:0"] = AllowedOrigin,
        ["OrleansPush:Limits:MessagesPerSecond"] = MessagesPerSecond.ToString(),
        ["OrleansPush:Limits:MessageBurst"] = MessagesPerSecond.ToString(),
        ["OrleansPush:Limits:ConnectionsPerUser"] = ConnectionsPerUser.ToString(),
        ["OrleansPush:Topics:Namespaces:public:PublicSubscribe"] = "true",
        ["OrleansPush:Topics:Namespaces:chat:ClientPublish"] = "true",
    });

    public async Task DisposeAsync() => await Gateway.DisposeAsync();

    public static string NewUser() => "u" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>A token signed with the gateway's key (or <paramref name="key"/>), valid for <paramref name="lifetime"/>
    /// from now (negative: already expired).</summary>
    public string Token(string? sub, string[]? topics = null, string[]? publish = null, bool admin = false, TimeSpan? lifetime = null,
        string? audience = Audience, byte[]? key = null)
    {
        var now = DateTime.UtcNow;
        var expires = now + (lifetime ?? TimeSpan.FromHours(1));
        var claims = new Dictionary<string, object>();
        if (sub is not null)
        {
            claims["sub"] = sub;
        }

        if (topics is not null)
        {
            claims["topics"] = topics;
        }

        if (publish is not null)
        {
            claims["publish"] = publish;
        }

        if (admin)
        {
            claims["admin"] = true;
        }

        var token = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = audience,
            IssuedAt = expires < now ? expires.AddMinutes(-10) : now,
            NotBefore = expires < now ? expires.AddMinutes(-10) : now.AddSeconds(-1),
            Expires = expires,
            Claims = claims,
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(key ?? Key), SecurityAlgorithms.HmacSha256),
        });
        _tokens.Enqueue(token);
        return token;
    }

    /// <summary>A backend's token: publish anywhere.</summary>
    public string Backend(bool admin = false) => Token("backend", publish: ["**"], admin: admin);
}

[CollectionDefinition(Name)]
public sealed class SecurityCollection : ICollectionFixture<SecurityFixture>
{
    public const string Name = "secured gateway";
}

/// <summary>A gateway on real Kestrel (127.0.0.1, free port) with extra logging captured; like <see cref="TestGateway"/>
/// but built here so a log provider can be added before the gateway's wiring (and its redaction) runs.</summary>
public sealed class SecureGateway : IAsyncDisposable
{
    private readonly GatewayHost _host;

    private SecureGateway(GatewayHost host, Uri baseAddress)
    {
        _host = host;
        BaseAddress = baseAddress;
        Http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public Uri BaseAddress { get; }

    public HttpClient Http { get; }

    public IServiceProvider Services => _host.App.Services;

    public Uri WebSocketUri(string? query = null) => new($"ws://{BaseAddress.Authority}/ws{(query is null ? string.Empty : "?" + query)}");

    public static async Task<SecureGateway> StartAsync(LogCapture? logs, IDictionary<string, string?> settings, string? url = "http://127.0.0.1:0")
    {
        var all = TestGateway.Merge(TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(TestGateway.EmbeddedSettings(), new Dictionary<string, string?>
        {
            ["Logging:LogLevel:OrleansPush"] = "Debug",
            ["Logging:LogLevel:Microsoft.AspNetCore"] = "Debug",
        })), settings);
        var (host, address) = await TestGateway.StartHostAsync(all, url, logs);
        return new SecureGateway(host, address);
    }

    /// <summary>Opens a raw-protocol socket and returns the HTTP status of the handshake (101 when accepted).</summary>
    public async Task<(HttpStatusCode Status, ClientWebSocket? Socket)> TryConnectAsync(string? query = null, string? bearer = null, string? origin = null)
    {
        var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("orleanspush.v1.json");
        socket.Options.CollectHttpResponseDetails = true;
        if (bearer is not null)
        {
            socket.Options.SetRequestHeader("Authorization", "Bearer " + bearer);
        }

        if (origin is not null)
        {
            socket.Options.SetRequestHeader("Origin", origin);
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            await socket.ConnectAsync(WebSocketUri(query), cts.Token);
            return (socket.HttpStatusCode, socket);
        }
        catch (WebSocketException)
        {
            var status = socket.HttpStatusCode;
            socket.Dispose();
            return (status, null);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            await _host.App.StopAsync(stop.Token);
        }

        await _host.DisposeAsync();
    }
}

/// <summary>Keeps every log line (category, message, structured values, exception) the gateway writes.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _lines);

    public void Dispose()
    {
    }

    private sealed class Logger(string category, ConcurrentQueue<string> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var values = state is IEnumerable<KeyValuePair<string, object?>> pairs ? string.Join(";", pairs.Select(p => $"{p.Key}={p.Value}")) : string.Empty;
            lines.Enqueue($"{category}|{eventId.Id}|{formatter(state, exception)}|{values}|{exception}");
        }
    }
}
