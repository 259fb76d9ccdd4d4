using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway with short SSE heartbeats and a short long-poll wait, shared by the SSE and long-polling
/// tests; each test uses topics of its own.</summary>
public sealed class HttpStreamingFixture : IAsyncLifetime
{
    public static readonly TimeSpan PollWait = TimeSpan.FromSeconds(2);
    public const int PollMaxMessages = 5;

    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync() => Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
    {
        ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3",
        ["OrleansPush:Sse:HeartbeatInterval"] = "00:00:00.300",
        ["OrleansPush:LongPolling:Wait"] = PollWait.ToString(),
        ["OrleansPush:LongPolling:MaxMessages"] = PollMaxMessages.ToString(),
    });

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class HttpStreamingCollection : ICollectionFixture<HttpStreamingFixture>
{
    public const string Name = "http streaming gateway";
}

/// <summary>One Server-Sent Events event as a client sees it (comments are events with <see cref="Comment"/> set). As in a
/// browser's EventSource, an event without an <c>event:</c> line is named <c>message</c>: that is a pushed message.</summary>
public sealed record SseEvent(string? Event, string Data, string? Id, string? Comment)
{
    public JsonElement Json => JsonDocument.Parse(Data).RootElement.Clone();

    /// <summary>The raw text of <c>data</c> inside a pushed message (a <c>message</c> event).</summary>
    public string RawData
    {
        get
        {
            var start = Data.IndexOf("\"data\":", StringComparison.Ordinal);
            return start < 0 ? string.Empty : Data[(start + 7)..^1];
        }
    }

    public long Seq => Json.GetProperty("seq").GetInt64();

    public string Topic => Json.GetProperty("topic").GetString()!;
}

/// <summary>A Server-Sent Events client on HttpClient, parsing the stream as the EventSource spec does. Every read is
/// bounded.</summary>
public sealed class SseClient : IAsyncDisposable
{
    private readonly HttpResponseMessage _response;
    private readonly StreamReader _reader;

    private SseClient(HttpResponseMessage response, StreamReader reader)
    {
        _response = response;
        _reader = reader;
    }

    public static async Task<SseClient> ConnectAsync(HttpClient http, string pathAndQuery, string? lastEventId = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, pathAndQuery);
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        if (lastEventId is not null)
        {
            request.Headers.Add("Last-Event-ID", lastEventId);
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        if (!response.IsSuccessStatusCode)
        {
            // Read the body only on failure: a stream's body never ends.
            Assert.Fail($"GET {pathAndQuery} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cts.Token)}");
        }

        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var stream = await response.Content.ReadAsStreamAsync(cts.Token);
        return new SseClient(response, new StreamReader(stream, Encoding.UTF8));
    }

    /// <summary>The next event or comment.</summary>
    public async Task<SseEvent> NextAsync(TimeSpan? wait = null)
    {
        using var cts = new CancellationTokenSource(wait ?? WsClient.DefaultWait);
        string? name = null, id = null;
        var data = new List<string>();
        while (true)
        {
            var line = await _reader.ReadLineAsync(cts.Token) ?? throw new EndOfStreamException("The stream ended.");
            if (line.Length == 0)
            {
                if (data.Count > 0 || name is not null)
                {
                    return new SseEvent(name ?? "message", string.Join('\n', data), id, null);
                }

                continue;
            }

            if (line[0] == ':')
            {
                return new SseEvent(null, string.Empty, null, line[1..].Trim());
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var field = colon < 0 ? line : line[..colon];
            var value = colon < 0 ? string.Empty : line[(colon + 1)..];
            if (value.StartsWith(' '))
            {
                value = value[1..];
            }

            switch (field)
            {
                case "event":
                    name = value;
                    break;
                case "data":
                    data.Add(value);
                    break;
                case "id":
                    id = value;
                    break;
            }
        }
    }

    /// <summary>The next <paramref name="count"/> events named <paramref name="name"/>; comments and other events are skipped.</summary>
    public async Task<List<SseEvent>> EventsAsync(string name, int count, TimeSpan? wait = null)
    {
        var events = new List<SseEvent>(count);
        var deadline = DateTime.UtcNow + (wait ?? WsClient.DefaultWait);
        while (events.Count < count)
        {
            var e = await NextAsync(Left(deadline));
            if (e.Event == name)
            {
                events.Add(e);
            }
        }

        return events;
    }

    /// <summary>True when no event (comments aside) arrives within <paramref name="quiet"/>.</summary>
    public async Task<bool> IsQuietAsync(TimeSpan quiet)
    {
        var deadline = DateTime.UtcNow + quiet;
        try
        {
            while (DateTime.UtcNow < deadline)
            {
                if ((await NextAsync(Left(deadline))).Comment is null)
                {
                    return false;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }

        return true;
    }

    private static TimeSpan Left(DateTime deadline)
    {
        var left = deadline - DateTime.UtcNow;
        return left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1);
    }

    public ValueTask DisposeAsync()
    {
        _reader.Dispose();
        _response.Dispose();
        return ValueTask.CompletedTask;
    }
}
