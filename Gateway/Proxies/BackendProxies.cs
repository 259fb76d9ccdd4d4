using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Proxies;

/// <summary>What the connect proxy is told about a connection that carries no token (at the door, and again whenever
/// its answer reaches <c>expiresAt</c>).</summary>
/// <param name="Transport">The transport (<c>ws</c>, <c>sse</c>, <c>poll</c>, <c>signalr</c>, <c>mqtt</c>, ...).</param>
/// <param name="Cookies">The HTTP request's cookies (MQTT over WebSocket too), for a backend that knows its users by
/// their session cookie.</param>
/// <param name="Mqtt">An MQTT client's CONNECT credentials.</param>
/// <param name="User">The user the connection named in open mode (<c>?user=</c>, MQTT's user name), or, when the
/// answer is asked again, the user the backend named before.</param>
/// <param name="Token">A token the connection carried that the gateway does not take as a JWT (an application's own
/// opaque token; in open mode, any token), as sent: the backend may know it.</param>
/// <param name="Headers">The HTTP request's headers named in <c>Connect:Headers</c> that it carries.</param>
public sealed record ConnectProxyRequest(
    string Transport,
    string? RemoteAddress,
    IReadOnlyDictionary<string, string>? Cookies = null,
    MqttCredentials? Mqtt = null,
    string? User = null,
    string? Token = null,
    IReadOnlyDictionary<string, string>? Headers = null);

public sealed record MqttCredentials(string ClientId, string? Username, string? Password);

/// <summary>A proxy's refusal as the client sees it: a wire code and a message (the connect proxy's own 4xx body, or
/// <c>unavailable</c> when the proxy timed out or failed).</summary>
public sealed record ProxyRefusal(string Code, string Message, int Status)
{
    /// <summary>The backend did not decide (no answer in time, a 5xx, a body off the contract), as opposed to a 4xx.</summary>
    public bool NoAnswer => Status >= StatusCodes.Status500InternalServerError;
}

/// <summary>
/// The backend's connect, subscribe and publish proxies (DESIGN.md "Backends in the loop"): one <c>POST</c> of JSON to
/// the configured URL, bounded by its <c>Timeout</c>. A 2xx answer allows, a 4xx refuses (the connect proxy's
/// <c>{"code","message"}</c> is passed on to the client), and anything else (5xx, no answer in time, an answer that is
/// not what the contract says) refuses with <c>unavailable</c>: never a guess in the client's favour. The connect answer
/// holds for its connection until its <c>expiresAt</c> (then it is asked again, see
/// <see cref="Connections.ConnectionCommands"/>); subscribe and publish answers hold for one request.
/// </summary>
public sealed class BackendProxies(IHttpClientFactory clients, IOptions<ProxyOptions> options, ILogger<BackendProxies> logger)
{
    /// <summary>The named <see cref="HttpClient"/> every proxy call goes through.</summary>
    public const string ClientName = "OrleansPush.Proxy";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private readonly ProxyOptions _options = options.Value;

    public bool ConnectEnabled => _options.Connect.Url is not null;

    public bool SubscribeEnabled => _options.Subscribe.Url is not null;

    public bool PublishEnabled => _options.Publish.Url is not null;

    /// <summary>What an HTTP request tells the connect proxy: its cookies, its token (<c>Authorization: Bearer</c>, else
    /// <c>?access_token=</c>; asked about only when it is not a JWT the gateway takes) and the headers
    /// <c>Connect:Headers</c> names.</summary>
    public ConnectProxyRequest RequestOf(string transport, string? remoteAddress, HttpRequest request)
    {
        var cookies = request.Cookies.Count == 0 ? null : request.Cookies.ToDictionary(c => c.Key, c => c.Value, StringComparer.Ordinal);
        var authorization = request.Headers.Authorization.ToString();
        var token = authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? authorization[7..].Trim() : request.Query["access_token"].ToString();
        Dictionary<string, string>? headers = null;
        foreach (var name in _options.Connect.Headers)
        {
            if (request.Headers.TryGetValue(name, out var value) && value.Count > 0)
            {
                (headers ??= new(StringComparer.OrdinalIgnoreCase))[name] = value.ToString();
            }
        }

        return new ConnectProxyRequest(transport, remoteAddress, cookies, Token: token.Length > 0 ? token : null, Headers: headers);
    }

    /// <summary>Asks who the connection is. The access it grants carries the backend's patterns, its per-connection
    /// subscriptions, its expiry and <paramref name="request"/> (to ask again with at that expiry).</summary>
    public async Task<(ConnectionAccess? Access, ProxyRefusal? Refusal)> ConnectAsync(ConnectProxyRequest request)
    {
        var (status, body, failure) = await PostAsync(_options.Connect, "connect", request);
        if (failure is not null)
        {
            return (null, failure);
        }

        if (status >= 400)
        {
            var refused = Read<RefusalBody>(body);
            var code = refused?.Code is { Length: > 0 and <= 64 } c && c.All(ch => ch is (>= 'a' and <= 'z') or '_') ? c : WireCodes.Forbidden;
            return (null, new ProxyRefusal(code, Printable(refused?.Message) ?? "The backend refused the connection.", status));
        }

        if (Read<ConnectAnswer>(body) is not { User: { } user } answer || !TopicName.IsValidUserId(user))
        {
            ProxyLog.BadAnswer(logger, "connect");
            return (null, Unavailable("connect"));
        }

        return (new ConnectionAccess(
            user,
            Patterns(answer.Topics),
            Patterns(answer.Publish),
            admin: false,
            answer.ExpiresAt,
            subscriptions: [.. (answer.Subscriptions ?? []).Where(t => TopicName.IsValid(t)).Take(1000)])
        {
            ProxyRequest = request,
        }, null);
    }

    /// <summary>Asks whether <paramref name="user"/> may subscribe to <paramref name="topic"/>: null allows.</summary>
    public async Task<ProxyRefusal?> SubscribeAsync(string? user, string topic)
    {
        var (status, _, failure) = await PostAsync(_options.Subscribe, "subscribe", new SubscribeRequest(user, topic));
        return failure ?? (status >= 400
            ? new ProxyRefusal(WireCodes.Forbidden, "The backend refused this subscription.", StatusCodes.Status403Forbidden)
            : null);
    }

    /// <summary>Asks whether a client publish may go out: the payload to publish (the client's, or the backend's
    /// replacement) with its kind, or the refusal. A JSON payload goes to the backend as <c>data</c>, a binary one as
    /// <c>data_b64</c>; the answer may replace it with either.</summary>
    public async Task<(ReadOnlyMemory<byte> Payload, PayloadFormat Format, ProxyRefusal? Refusal)> PublishAsync(string? user, string topic,
        ReadOnlyMemory<byte> payload, PayloadFormat format = PayloadFormat.Json)
    {
        JsonElement? data = null;
        if (format == PayloadFormat.Json)
        {
            try
            {
                data = JsonDocument.Parse(payload).RootElement;
            }
            catch (JsonException)
            {
                return (payload, format, new ProxyRefusal(WireCodes.BadRequest, "The payload is not JSON.", StatusCodes.Status400BadRequest));
            }
        }

        var request = new PublishRequest(user, topic, data, format == PayloadFormat.Binary ? payload.ToArray() : null);
        var (status, body, failure) = await PostAsync(_options.Publish, "publish", request);
        if (failure is not null)
        {
            return (payload, format, failure);
        }

        if (status >= 400)
        {
            return (payload, format, new ProxyRefusal(WireCodes.Forbidden, "The backend refused this publish.", StatusCodes.Status403Forbidden));
        }

        // A body {"data": ...} or {"data_b64": "..."} replaces the payload; an empty answer keeps the client's.
        if (body.Length > 0 && Read<JsonElement?>(body) is { ValueKind: JsonValueKind.Object } answer)
        {
            if (answer.TryGetProperty("data", out var replaced))
            {
                return (JsonSerializer.SerializeToUtf8Bytes(replaced), PayloadFormat.Json, null);
            }

            if (answer.TryGetProperty("data_b64", out var base64) && base64.ValueKind == JsonValueKind.String && base64.TryGetBytesFromBase64(out var bytes))
            {
                return (bytes, PayloadFormat.Binary, null);
            }
        }

        return (payload, format, null);
    }

    private async Task<(int Status, byte[] Body, ProxyRefusal? Failure)> PostAsync<T>(ProxyEndpointOptions endpoint, string which, T request)
    {
        using var timeout = new CancellationTokenSource(endpoint.Timeout);
        try
        {
            using var response = await clients.CreateClient(ClientName).PostAsJsonAsync(endpoint.Url, request, Json, timeout.Token);
            var body = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 300 || status is >= 400 and < 500)
            {
                return (status, body, null);
            }

            ProxyLog.Failed(logger, which, status, null);
            return (status, body, Unavailable(which));
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException)
        {
            ProxyLog.Failed(logger, which, 0, ex);
            return (0, [], Unavailable(which));
        }
    }

    private static ProxyRefusal Unavailable(string which) =>
        new(WireCodes.Unavailable, $"The backend's {which} proxy did not answer; try again.", StatusCodes.Status503ServiceUnavailable);

    private static T? Read<T>(byte[] body)
    {
        if (body.Length == 0)
        {
            return default;
        }

        try
        {
            return JsonSerializer.Deserialize<T>(body, Json);
        }
        catch (JsonException)
        {
            return default;
        }
    }

    private static TopicPattern[] Patterns(string[]? patterns) =>
        [.. (patterns ?? []).Select(p => TopicPattern.TryParse(p, out var parsed) ? parsed : null).Where(p => p is not null).Select(p => p!).Take(1000)];

    private static string? Printable(string? message) =>
        message is null ? null : new string([.. message.Take(200).Select(c => char.IsControl(c) ? '?' : c)]);

    private sealed record RefusalBody(string? Code, string? Message);

    private sealed record ConnectAnswer(string? User, string[]? Topics, string[]? Publish, string[]? Subscriptions, DateTimeOffset? ExpiresAt);

    private sealed record SubscribeRequest(string? User, string Topic);

    private sealed record PublishRequest(string? User, string Topic, JsonElement? Data,
        [property: System.Text.Json.Serialization.JsonPropertyName("data_b64")] byte[]? DataB64);
}

internal static partial class ProxyLog
{
    [LoggerMessage(EventId = 9001, Level = LogLevel.Warning, Message = "The {Proxy} proxy failed (HTTP status {Status}; 0: no answer in time or no connection)")]
    public static partial void Failed(ILogger logger, string proxy, int status, Exception? exception);

    [LoggerMessage(EventId = 9002, Level = LogLevel.Warning, Message = "The {Proxy} proxy answered with a body that does not follow the contract")]
    public static partial void BadAnswer(ILogger logger, string proxy);

    [LoggerMessage(EventId = 9003, Level = LogLevel.Error, Message = "Asking the connect proxy again for connection {ConnectionId} failed; the connection is closed")]
    public static partial void RenewFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(EventId = 9004, Level = LogLevel.Warning, Message = "The connect proxy did not answer for connection {ConnectionId} at its expiry; it keeps its answer until {RetryAt} and is asked again then")]
    public static partial void RenewPostponed(ILogger logger, string connectionId, DateTimeOffset retryAt);
}
