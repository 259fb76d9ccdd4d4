using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;
using StackExchange.Redis;

namespace OrleansPush.Gateway.Tests;

/// <summary>The browser module (<c>/js/orleanspush.js</c>) in headless Chromium against a real gateway on the Redis
/// store with a faulty stream: it reports an epoch change of a topic it follows as a failed recovery, and after a
/// <c>reset</c> it subscribes again with <c>since</c> by itself. The script drives the faults through test-only
/// endpoints of this gateway (<c>/test/...</c>).</summary>
public sealed class BrowserModuleTests
{
    [Fact]
    public async Task ModuleReportsAnEpochChangeAndTakesUpAResetSubscriptionAgain()
    {
        var redis = Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
            ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh.");
        var prefix = "browser" + Guid.NewGuid().ToString("N")[..8];
        using var multiplexer = await ConnectionMultiplexer.ConnectAsync(redis);
        var faults = new StreamFaults();
        var output = await BrowserTests.RunScriptAsync("module-guarantees.js",
            new Dictionary<string, string?>
            {
                ["OrleansPush:Storage:Provider"] = "Redis",
                ["OrleansPush:Storage:Redis"] = redis,
                ["OrleansPush:Storage:Prefix"] = prefix,
                ["OrleansPush:Routing:Lease"] = "00:30:00", // renewed when the script says so
                ["OrleansPush:Silo:IdleGrainTimeout"] = "01:00:00", // at least the lease
                ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3",
            },
            builder => StreamFaults.Register(faults)(builder.Services),
            app =>
            {
                var services = app.Services;
                app.MapPost("/test/lose", (string topic, long from, long to) => faults.Lose(topic, seq => seq >= from && seq <= to));
                app.MapPost("/test/new-epoch", (string topic) =>
                    HistoryLoss.ForceNewEpochAsync(multiplexer, prefix, services.GetRequiredService<IClusterClient>(), topic));
                app.MapPost("/test/renew", (CancellationToken cancellationToken) => services.GetRequiredService<TopicRouter>().RenewAsync(cancellationToken));
            });
        Assert.Contains("OK module", output, StringComparison.Ordinal);
    }

    /// <summary>Delta compression in the browser: the module applies the gateway's Fossil deltas over 1,000 randomly
    /// edited documents, and its handler's <c>text</c> is each published document exactly.</summary>
    [Fact]
    public async Task ModuleRebuildsAThousandRandomlyEditedMessagesExactlyFromDeltas()
    {
        var output = await BrowserTests.RunScriptAsync("module-delta.js", new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:doc:Delta"] = "true",
        });
        Assert.Contains("OK delta", output, StringComparison.Ordinal);
    }

    /// <summary>Binary payloads in the browser: the module's WebSocket and Server-Sent Events handlers get each binary
    /// message as a <c>Uint8Array</c> of the bytes published (every byte value, invalid UTF-8), and JSON as its value.</summary>
    [Fact]
    public async Task ModuleDeliversBinaryMessagesAsUint8ArraysOfTheBytesPublished()
    {
        var output = await BrowserTests.RunScriptAsync("module-binary.js", new Dictionary<string, string?>());
        Assert.Contains("OK binary", output, StringComparison.Ordinal);
    }
}
