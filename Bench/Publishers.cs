using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace OrleansPush.Bench;

/// <summary>How a run publishes: one HTTP request per message, the batch API, or the in-cluster .NET publisher.</summary>
internal enum PublishMode
{
    Http,
    Batch,
    Orleans,
}

/// <summary>Publishes a group of messages; answers how many were accepted.</summary>
internal interface IPublisher : IAsyncDisposable
{
    /// <summary>How many messages one call carries.</summary>
    int BatchSize { get; }

    Task<int> PublishAsync(IReadOnlyList<string> topics, Func<byte[]> payload, CancellationToken cancellationToken);
}

internal sealed class HttpPublisher(SystemUnderTest sut, int batchSize) : IPublisher
{
    private static readonly MediaTypeHeaderValue _json = new("application/json");
    private readonly HttpClient _http = new(new SocketsHttpHandler { MaxConnectionsPerServer = 256, PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5) })
    {
        Timeout = TimeSpan.FromSeconds(10),
    };

    public int BatchSize => batchSize;

    public async Task<int> PublishAsync(IReadOnlyList<string> topics, Func<byte[]> payload, CancellationToken cancellationToken)
    {
        try
        {
            if (batchSize == 1)
            {
                using var content = new ByteArrayContent(payload()) { Headers = { ContentType = _json } };
                using var one = await _http.PostAsync($"{sut.PublishEndpoint(topics[0])}/api/topics/{topics[0]}", content, cancellationToken);
                return one.IsSuccessStatusCode ? 1 : 0;
            }

            var body = new StringBuilder("[");
            foreach (var topic in topics)
            {
                body.Append(body.Length > 1 ? "," : "").Append("{\"topic\":\"").Append(topic).Append("\",\"data\":").Append(Encoding.UTF8.GetString(payload())).Append('}');
            }

            using var batch = new StringContent(body.Append(']').ToString(), Encoding.UTF8, "application/json");
            using var answer = await _http.PostAsync($"{sut.PublishEndpoint(topics[0])}/api/publish", batch, cancellationToken);
            if (!answer.IsSuccessStatusCode)
            {
                return 0;
            }

            using var doc = JsonDocument.Parse(await answer.Content.ReadAsByteArrayAsync(cancellationToken));
            return doc.RootElement.EnumerateArray().Count(a => a.TryGetProperty("seq", out _));
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return 0;
        }
    }

    public ValueTask DisposeAsync()
    {
        _http.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>A backend inside the cluster: an Orleans client calling the topic grain directly.</summary>
internal sealed class OrleansPublisher : IPublisher
{
    private readonly IHost _host;
    private readonly IClusterClient _client;

    private OrleansPublisher(IHost host)
    {
        _host = host;
        _client = host.Services.GetRequiredService<IClusterClient>();
    }

    public int BatchSize => 1;

    /// <summary>The cluster client (the churn scenario asks the management grain for activations).</summary>
    public IClusterClient Client => _client;

    public static async Task<OrleansPublisher> StartAsync(int gatewayPort)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.UseOrleansClient(c => c.UseLocalhostClustering(gatewayPort, "orleanspush", "orleanspush"));
        var host = builder.Build();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await host.StartAsync(timeout.Token);
        return new OrleansPublisher(host);
    }

    public async Task<int> PublishAsync(IReadOnlyList<string> topics, Func<byte[]> payload, CancellationToken cancellationToken)
    {
        try
        {
            await _client.GetGrain<ITopicGrain>(topics[0]).PublishAsync(payload(), null).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
            return 1;
        }
        catch (Exception e) when (e is OrleansException or TimeoutException or OperationCanceledException)
        {
            return 0;
        }
    }

    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await _host.StopAsync(timeout.Token);
        _host.Dispose();
    }
}
