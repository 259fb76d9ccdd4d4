using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Tests;

namespace OrleansPush.Client.Tests;

/// <summary>
/// A silo, a publishing gateway that stays up, and a client-facing gateway on a fixed loopback port that a test can
/// stop and start again (the silo keeps the topics' history meanwhile), so a client sees its gateway die and return.
/// </summary>
public sealed class ClientCluster : IAsyncDisposable
{
    private readonly Dictionary<string, string?> _settings;
    private GatewayHost? _edge;

    private ClientCluster(TestSilo silo, TestGateway publishing, int edgePort, Dictionary<string, string?> settings)
    {
        Silo = silo;
        Publishing = publishing;
        EdgePort = edgePort;
        _settings = settings;
    }

    public TestSilo Silo { get; }

    /// <summary>The gateway backends publish through; it never stops during a test.</summary>
    public TestGateway Publishing { get; }

    public int EdgePort { get; }

    public Uri EdgeWebSocketUri => new($"ws://127.0.0.1:{EdgePort}/ws");

    public static async Task<ClientCluster> StartAsync()
    {
        var settings = new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:steady:HistorySize"] = "1000",
            ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3",
        };
        var silo = await TestSilo.StartAsync(settings);
        var publishing = await TestGateway.StartClientAsync(silo, settings);
        var cluster = new ClientCluster(silo, publishing, Ports.Free(), settings);
        await cluster.StartEdgeAsync();
        return cluster;
    }

    /// <summary>Starts the client-facing gateway on <see cref="EdgePort"/>.</summary>
    public async Task StartEdgeAsync()
    {
        var settings = TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(_settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Localhost",
            ["OrleansPush:Cluster:GatewayPorts:0"] = Silo.GatewayPort.ToString(),
        }));
        var host = await GatewayHost.CreateAsync([], builder =>
        {
            builder.Configuration.AddInMemoryCollection(settings);
            builder.WebHost.UseUrls($"http://127.0.0.1:{EdgePort}");
        });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await host.App.StartAsync(cts.Token);
        _edge = host;
    }

    /// <summary>Stops the client-facing gateway; its connections are cut after a short grace.</summary>
    public async Task StopEdgeAsync()
    {
        if (_edge is not { } edge)
        {
            return;
        }

        _edge = null;
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1)))
        {
            await edge.App.StopAsync(cts.Token);
        }

        await edge.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopEdgeAsync();
        await Publishing.DisposeAsync();
        await Silo.DisposeAsync();
    }
}
