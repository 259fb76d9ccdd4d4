using Microsoft.AspNetCore.Builder;
using System.Diagnostics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Tests;

/// <summary>The demo page in real headless Chromium (Debian's <c>/usr/bin/chromium</c>), driven by playwright-core from
/// <c>tests/browser</c> (<c>./test.sh</c> runs <c>npm install</c> there).</summary>
public sealed class BrowserTests
{
    [Fact]
    public async Task DemoPageShowsPublishedMessagesResumesAfterADisconnectAndSurfacesAGapHistoryCannotFill()
    {
        var output = await RunScriptAsync("demo-page.js", new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "2",
        });
        Assert.Contains("OK browser-", output, StringComparison.Ordinal);
    }

    /// <summary>Starts an embedded gateway that serves the Gateway project's wwwroot (as <c>dotnet run --project
    /// Gateway</c> serves it) with <paramref name="settings"/>, runs <c>node <paramref name="script"/> &lt;base url&gt;</c>
    /// from <c>tests/browser</c> against it, and returns the script's output once it exited 0.</summary>
    /// <param name="configure">Registers test seams before the gateway's own wiring.</param>
    /// <param name="map">Maps test-only endpoints the script drives.</param>
    internal static async Task<string> RunScriptAsync(string script, IDictionary<string, string?> settings,
        Action<WebApplicationBuilder>? configure = null, Action<WebApplication>? map = null)
    {
        var root = RepositoryRoot();
        var scripts = Path.Combine(root, "tests", "browser");
        Assert.True(Directory.Exists(Path.Combine(scripts, "node_modules", "playwright-core")),
            $"playwright-core is not installed: run 'npm install' in {scripts} (./test.sh does).");
        Assert.True(File.Exists("/usr/bin/chromium"), "Chromium is not installed: apt-get install chromium (./test.sh does).");

        var siloPort = Ports.Free().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var all = TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Embedded",
            ["OrleansPush:Cluster:SiloPort"] = siloPort,
            ["OrleansPush:Cluster:PrimarySiloPort"] = siloPort,
            ["OrleansPush:Cluster:GatewayPort"] = Ports.Free().ToString(System.Globalization.CultureInfo.InvariantCulture),
        }, settings));
        await using var host = await GatewayHost.CreateAsync(["--webroot=" + Path.Combine(root, "Gateway", "wwwroot")], builder =>
        {
            builder.Configuration.AddInMemoryCollection(all);
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            configure?.Invoke(builder);
        });
        map?.Invoke(host.App);
        using (var start = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await host.App.StartAsync(start.Token);
        }

        var address = host.App.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        try
        {
            var (exitCode, output) = await ChildProcess.RunAsync("node", [script, address], scripts, TimeSpan.FromSeconds(90));
            Assert.True(exitCode == 0, $"the browser script exited {exitCode}:\n{output}");
            return output;
        }
        finally
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await host.App.StopAsync(stop.Token);
        }
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Packages.props")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("The repository root (with Directory.Packages.props) was not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>Runs a real program as a child process, bounded in time; on timeout it is killed (with its children) by
/// its own process id.</summary>
internal static class ChildProcess
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string file, IEnumerable<string> arguments, string? workingDirectory, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{file} did not start.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
            return (-1, $"timed out after {timeout}\n{await stdout.WaitAsync(TimeSpan.FromSeconds(5))}{await stderr.WaitAsync(TimeSpan.FromSeconds(5))}");
        }

        return (process.ExitCode, await stdout.WaitAsync(TimeSpan.FromSeconds(10)) + await stderr.WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
