using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace OrleansPush.Grains.Tests;

/// <summary>What the shared silo wiring (<see cref="PushSilo.AddOrleansPushSilo"/>, used by the Silo host and the
/// gateway's embedded silo) puts in place.</summary>
public sealed class SiloWiringTests
{
    private const string DistributedDirectory = "Orleans.Runtime.GrainDirectory.DistributedGrainDirectory";

    [Fact]
    public void GrainsAreOnTheStronglyConsistentDirectoryWithoutALeaseByDefault()
    {
        using var host = Build([]);
        Assert.NotNull(host.Services.GetService(DirectoryType()));
        Assert.Equal(TimeSpan.Zero, host.Services.GetRequiredService<IOptions<GrainDirectoryOptions>>().Value.RangeLeaseDuration);
    }

    [Fact]
    public void TheDirectoryLeaseIsConfigurableAndTheDirectoryCanBeTurnedOff()
    {
        using (var leased = Build(new() { ["OrleansPush:Cluster:GrainDirectoryLease"] = "00:00:20" }))
        {
            Assert.Equal(TimeSpan.FromSeconds(20), leased.Services.GetRequiredService<IOptions<GrainDirectoryOptions>>().Value.RangeLeaseDuration);
        }

        using var off = Build(new() { ["OrleansPush:Cluster:StrongGrainDirectory"] = "false" });
        Assert.Null(off.Services.GetService(DirectoryType()));
    }

    private static Type DirectoryType() => typeof(CoreHostingExtensions).Assembly.GetType(DistributedDirectory, throwOnError: true)!;

    private static IHost Build(Dictionary<string, string?> settings)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.UseOrleans(silo => silo.AddOrleansPushSilo(configuration));
        return builder.Build();
    }
}
