using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace OrleansPush.Gateway.Tests;

/// <summary>A backend's webhook endpoint: real Kestrel on loopback, checking each request's signature with the shared
/// secret as a receiver would (an unsigned or wrongly signed request is answered 401 and counted). It can answer 500 a
/// number of times per event, and be stopped and started again on the same port.</summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    public const string Secret = "a-webhook-secret-of-at-least-32-characters";

    private readonly ConcurrentDictionary<string, int> _attempts = new(StringComparer.Ordinal);
    private readonly List<WebhookDelivery> _acknowledged = [];
    private WebApplication? _app;

    private WebhookReceiver(int port) => Port = port;

    public int Port { get; }

    public string Url => $"http://127.0.0.1:{Port}/hooks";

    /// <summary>Answer 500 this many times to each event before 200.</summary>
    public int FailuresPerEvent { get; set; }

    private int _badSignatures;

    /// <summary>Requests whose signature did not verify (answered 401).</summary>
    public int BadSignatures => Volatile.Read(ref _badSignatures);

    /// <summary>How many requests each event id got (acknowledged or not).</summary>
    public int AttemptsOf(string id) => _attempts.GetValueOrDefault(id);

    public static async Task<WebhookReceiver> StartAsync()
    {
        var receiver = new WebhookReceiver(Ports.Free());
        await receiver.StartAgainAsync();
        return receiver;
    }

    /// <summary>The endpoint's settings for a gateway or silo.</summary>
    public Dictionary<string, string?> Settings(string name = "backend", params string[] events)
    {
        var settings = new Dictionary<string, string?>
        {
            [$"OrleansPush:Webhooks:Endpoints:{name}:Url"] = Url,
            [$"OrleansPush:Webhooks:Endpoints:{name}:Secret"] = Secret,
            ["OrleansPush:Webhooks:FirstRetryDelay"] = "00:00:00.200",
            ["OrleansPush:Webhooks:MaxRetryDelay"] = "00:00:01",
        };
        for (var i = 0; i < events.Length; i++)
        {
            settings[$"OrleansPush:Webhooks:Endpoints:{name}:Events:{i}"] = events[i];
        }

        return settings;
    }

    public async Task StartAgainAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://127.0.0.1:{Port}");
        builder.Logging.ClearProviders();
        _app = builder.Build();
        _app.MapPost("/hooks", (Delegate)ReceiveAsync);
        await _app.StartAsync();
    }

    public async Task StopAsync()
    {
        if (_app is not null)
        {
            await _app.DisposeAsync();
            _app = null;
        }
    }

    /// <summary>The acknowledged events so far, in arrival order.</summary>
    public List<WebhookDelivery> Acknowledged()
    {
        lock (_acknowledged)
        {
            return [.. _acknowledged];
        }
    }

    /// <summary>Waits until the acknowledged events satisfy <paramref name="done"/>.</summary>
    public async Task<List<WebhookDelivery>> WaitForAsync(Func<List<WebhookDelivery>, bool> done, TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (true)
        {
            var events = Acknowledged();
            if (done(events))
            {
                return events;
            }

            Assert.True(DateTime.UtcNow < deadline,
                $"the webhook receiver did not get the expected events within {within}; it got:\n{string.Join("\n", events.Select(e => e.Body))}");
            await Task.Delay(50);
        }
    }

    private async Task<IResult> ReceiveAsync(HttpContext context)
    {
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer);
        var body = buffer.ToArray();
        var timestamp = context.Request.Headers["OrleansPush-Timestamp"].ToString();
        var signature = context.Request.Headers["OrleansPush-Signature"].ToString();
        if (!Verify(timestamp, body, signature))
        {
            Interlocked.Increment(ref _badSignatures);
            return Results.StatusCode(401);
        }

        var id = context.Request.Headers["OrleansPush-Event-Id"].ToString();
        var attempt = _attempts.AddOrUpdate(id, 1, (_, n) => n + 1);
        if (attempt <= FailuresPerEvent)
        {
            return Results.StatusCode(500);
        }

        lock (_acknowledged)
        {
            _acknowledged.Add(new WebhookDelivery(id, Encoding.UTF8.GetString(body), Stopwatch.GetTimestamp()));
        }

        return Results.Ok();
    }

    /// <summary>What a receiver does: HMAC-SHA256 of "timestamp.body" with the secret, compared in constant time.</summary>
    private static bool Verify(string timestamp, byte[] body, string signature)
    {
        var signed = Encoding.UTF8.GetBytes(timestamp + ".").Concat(body).ToArray();
        var expected = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), signed));
        return timestamp.Length > 0 && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(signature));
    }

    public ValueTask DisposeAsync() => new(StopAsync());
}

public sealed record WebhookDelivery(string Id, string Body, long ReceivedAt)
{
    private JsonElement Json => JsonDocument.Parse(Body).RootElement;

    public string Type => Json.GetProperty("type").GetString()!;

    public string? Topic => Json.TryGetProperty("topic", out var t) ? t.GetString() : null;

    public string? User => Json.TryGetProperty("user", out var u) ? u.GetString() : null;

    public string? BodyId => Json.GetProperty("id").GetString();

    public string? RawData => Json.TryGetProperty("data", out var d) ? d.GetRawText() : null;
}
