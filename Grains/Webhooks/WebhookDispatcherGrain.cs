using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Grains.Webhooks;

/// <inheritdoc cref="IWebhookDispatcherGrain"/>
/// <remarks>
/// Reads its event topic's history after its durable cursor, sends each event the endpoint wants as a signed POST, and
/// moves the cursor on when the endpoint answers 2xx. A failed POST is sent again with backoff (the same event, the same
/// id) until the endpoint takes it or the event is older than the endpoint's <c>MaxAge</c>; the events after it wait, so
/// each topic's events arrive in order. The cursor is stored after each answered slice: after a crash the endpoint may
/// get events again (at-least-once; the id lets it drop a repeat), never miss one the history still holds. Woken by
/// each new event and, on every silo, at start and when a silo dies (a dispatcher that died with its silo resumes).
/// </remarks>
public sealed class WebhookDispatcherGrain : Grain, IWebhookDispatcherGrain
{
    private const int SliceSize = 100;
    private static readonly TimeSpan KeepAliveWhileRetrying = TimeSpan.FromMinutes(30);

    private readonly IPersistentState<WebhookCursor> _cursor;
    private readonly WebhookHttp _http;
    private readonly WebhookOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<WebhookDispatcherGrain> _logger;
    private WebhookEndpointOptions? _endpoint;
    private string _name = string.Empty;
    private string _eventTopic = string.Empty;
    private byte[] _secret = [];
    private Task? _running;
    private bool _woken;

    public WebhookDispatcherGrain(
        [PersistentState("webhook", PushNames.StateStore)] IPersistentState<WebhookCursor> cursor,
        WebhookHttp http,
        IOptions<WebhookOptions> options,
        TimeProvider time,
        ILogger<WebhookDispatcherGrain> logger)
    {
        _cursor = cursor;
        _http = http;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var key = this.GetPrimaryKeyString();
        var bar = key.IndexOf('|', StringComparison.Ordinal);
        _name = key[(bar + 1)..];
        _eventTopic = $"{WebhookOptions.Namespace}:{key[..bar]}";
        if (_options.Endpoints.TryGetValue(_name, out var endpoint))
        {
            _endpoint = endpoint;
            _secret = Encoding.UTF8.GetBytes(endpoint.Secret!);
        }

        return Task.CompletedTask;
    }

    public Task WakeAsync()
    {
        _woken = true;
        if (_endpoint is not null && (_running is null || _running.IsCompleted))
        {
            _running = RunAsync();
        }

        return Task.CompletedTask;
    }

    public Task<TopicPosition> GetAcknowledgedAsync() =>
        Task.FromResult(new TopicPosition(_cursor.State.Epoch ?? string.Empty, _cursor.State.Seq));

    /// <summary>Delivers until caught up and not woken meanwhile. Runs inside the activation (calls interleave at its
    /// awaits, so a wake during a delivery is seen).</summary>
    private async Task RunAsync()
    {
        try
        {
            while (_woken)
            {
                _woken = false;
                while (await DeliverSliceAsync())
                {
                }
            }
        }
        catch (Exception ex)
        {
            // The store or the event topic is unavailable: the next event, or the next silo change, wakes it again.
            WebhookDispatchLog.Failed(_logger, _name, _eventTopic, ex);
        }
    }

    /// <summary>Delivers the next slice after the cursor; false when there was none.</summary>
    private async Task<bool> DeliverSliceAsync()
    {
        var topic = GrainFactory.GetGrain<ITopicGrain>(_eventTopic);
        var slice = await topic.ReadAsync(_cursor.State.Epoch == null ? 0 : _cursor.State.Seq, SliceSize);
        if (slice.Epoch != _cursor.State.Epoch)
        {
            if (_cursor.State.Epoch is not null)
            {
                // The event topic's history was lost (an in-memory store whose silo died): what it held is gone.
                WebhookDispatchLog.EpochChanged(_logger, _name, _eventTopic, _cursor.State.Epoch, slice.Epoch);
            }

            _cursor.State.Epoch = slice.Epoch;
            _cursor.State.Seq = 0;
            slice = await topic.ReadAsync(0, SliceSize);
        }

        if (slice.Messages.Length == 0)
        {
            return false;
        }

        if (slice.Messages[0].Seq > _cursor.State.Seq + 1)
        {
            WebhookDispatchLog.Dropped(_logger, _name, _eventTopic, slice.Messages[0].Seq - _cursor.State.Seq - 1);
        }

        foreach (var message in slice.Messages)
        {
            await DeliverAsync(message);
            _cursor.State.Seq = message.Seq;
        }

        await _cursor.WriteStateAsync();
        return true;
    }

    /// <summary>Sends one event until the endpoint answers 2xx or the event outlives <c>MaxAge</c>.</summary>
    private async Task DeliverAsync(TopicMessage message)
    {
        var type = TypeOf(message.Data);
        if (!_endpoint!.Wants(type))
        {
            return;
        }

        var id = $"{_eventTopic[(WebhookOptions.Namespace.Length + 1)..]}-{message.Epoch}-{message.Seq.ToString(CultureInfo.InvariantCulture)}";
        var body = WithId(id, message.Data);
        var delay = _options.FirstRetryDelay;
        while (true)
        {
            var failure = await PostAsync(id, body);
            if (failure is null)
            {
                return;
            }

            var age = _time.GetUtcNow().ToUnixTimeMilliseconds() - message.PublishedAtUnixMs;
            if (TimeSpan.FromMilliseconds(age) + delay > _endpoint.MaxAge)
            {
                WebhookDispatchLog.Expired(_logger, _name, id, type, failure);
                return;
            }

            WebhookDispatchLog.Retry(_logger, _name, id, failure, delay);
            DelayDeactivation(KeepAliveWhileRetrying);
            await Task.Delay(delay, _time);
            delay = delay * 2 < _options.MaxRetryDelay ? delay * 2 : _options.MaxRetryDelay;
        }
    }

    /// <summary>One signed POST; null when the endpoint acknowledged, else what went wrong.</summary>
    private async Task<string?> PostAsync(string id, byte[] body)
    {
        var timestamp = _time.GetUtcNow().ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
        using var request = new HttpRequestMessage(HttpMethod.Post, _endpoint!.Url) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Add("OrleansPush-Event-Id", id);
        request.Headers.Add("OrleansPush-Timestamp", timestamp);
        request.Headers.Add("OrleansPush-Signature", "sha256=" + Sign(_secret, timestamp, body));
        using var timeout = new CancellationTokenSource(_options.RequestTimeout);
        try
        {
            using var response = await _http.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            return response.IsSuccessStatusCode ? null : $"HTTP {(int)response.StatusCode}";
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException)
        {
            return ex is OperationCanceledException ? $"no answer within {_options.RequestTimeout}" : ex.Message;
        }
    }

    /// <summary>Lower-case hex of HMAC-SHA256(secret, timestamp + "." + body).</summary>
    public static string Sign(byte[] secret, string timestamp, ReadOnlySpan<byte> body)
    {
        var signed = new byte[timestamp.Length + 1 + body.Length];
        Encoding.ASCII.GetBytes(timestamp, signed);
        signed[timestamp.Length] = (byte)'.';
        body.CopyTo(signed.AsSpan(timestamp.Length + 1));
        return Convert.ToHexStringLower(HMACSHA256.HashData(secret, signed));
    }

    /// <summary>The stored event with <c>"id"</c> as its first property.</summary>
    private static byte[] WithId(string id, byte[] stored)
    {
        var prefix = Encoding.UTF8.GetBytes($"{{\"id\":{JsonSerializer.Serialize(id)},");
        var body = new byte[prefix.Length + stored.Length - 1];
        prefix.CopyTo(body, 0);
        stored.AsSpan(1).CopyTo(body.AsSpan(prefix.Length));
        return body;
    }

    /// <summary>The <c>type</c> of a stored event (its first property).</summary>
    private static string TypeOf(byte[] stored)
    {
        var reader = new Utf8JsonReader(stored);
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.PropertyName && reader.ValueTextEquals("type"u8) && reader.Read())
            {
                return reader.GetString() ?? string.Empty;
            }
        }

        return string.Empty;
    }
}

/// <summary>The HTTP client of webhook deliveries (one per silo; connections pooled and renewed).</summary>
public sealed class WebhookHttp : IDisposable
{
    public HttpClient Client { get; } = new(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(2) })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    public void Dispose() => Client.Dispose();
}

internal static partial class WebhookDispatchLog
{
    [LoggerMessage(EventId = 1211, Level = LogLevel.Warning, Message = "Webhook {Endpoint}: event {Id} failed ({Failure}); sending it again in {Delay}")]
    public static partial void Retry(ILogger logger, string endpoint, string id, string failure, TimeSpan delay);

    [LoggerMessage(EventId = 1212, Level = LogLevel.Error, Message = "Webhook {Endpoint}: event {Id} ({Type}) outlived its MaxAge and is dropped (last failure: {Failure})")]
    public static partial void Expired(ILogger logger, string endpoint, string id, string type, string failure);

    [LoggerMessage(EventId = 1213, Level = LogLevel.Error, Message = "Webhook {Endpoint}: the history of {EventTopic} was lost (epoch {Old} became {New}); its undelivered events are gone")]
    public static partial void EpochChanged(ILogger logger, string endpoint, string eventTopic, string old, string @new);

    [LoggerMessage(EventId = 1214, Level = LogLevel.Error, Message = "Webhook {Endpoint}: {Count} event(s) of {EventTopic} left its history (MaxBacklog or MaxAge) before they were delivered")]
    public static partial void Dropped(ILogger logger, string endpoint, string eventTopic, long count);

    [LoggerMessage(EventId = 1215, Level = LogLevel.Warning, Message = "Webhook {Endpoint}: reading {EventTopic} or storing its position failed; delivery resumes at the next event or silo change")]
    public static partial void Failed(ILogger logger, string endpoint, string eventTopic, Exception exception);
}
