using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Transports.Mqtt;
using OrleansPush.Grains;
using OrleansPush.Hosting;
using OrleansPush.Silo;
using static OrleansPush.Deploy.Tests.Manifests;

namespace OrleansPush.Deploy.Tests;

/// <summary>The container images and Kubernetes manifests in deploy/, checked against each other and against the
/// code they deploy, so that manifests and <c>Program.cs</c> never drift.</summary>
public sealed partial class DeployManifestTests
{
    private const string Silo = "orleanspush-silo";
    private const string Gateway = "orleanspush-gateway";

    public static TheoryData<string> OverlayNames()
    {
        var data = new TheoryData<string>();
        foreach (var overlay in Overlays)
        {
            data.Add(Path.GetFileName(overlay));
        }

        return data;
    }

    private static List<Dictionary<string, object?>> RenderOverlay(string overlay) => Render(Path.Combine(Kubernetes, "overlays", overlay));

    [Fact]
    public void EveryYamlFileUnderDeployParses()
    {
        var files = Directory.GetFiles(DeployFolder, "*.yaml", SearchOption.AllDirectories)
            .Concat(Directory.GetFiles(DeployFolder, "*.yml", SearchOption.AllDirectories)).ToArray();
        Assert.True(files.Length >= 8, $"expected the Kubernetes manifests under {DeployFolder}");
        foreach (var file in files)
        {
            var exception = Record.Exception(() => ReadDocuments(file));
            Assert.True(exception is null, $"{file}: {exception?.Message}");
        }
    }

    [Fact]
    public async Task YamllintFindsNothingInDeploy()
    {
        var info = new ProcessStartInfo("yamllint") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Root };
        foreach (var argument in new[] { "--strict", "-f", "parsable", "-c", "deploy/.yamllint.yaml", "deploy/" })
        {
            info.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Assert.Fail("yamllint is not installed (Debian package yamllint; ./test.sh installs it).");
            return;
        }

        using (process)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var output = process.StandardOutput.ReadToEndAsync(cts.Token);
            var errors = process.StandardError.ReadToEndAsync(cts.Token);
            await process.WaitForExitAsync(cts.Token);
            Assert.True(process.ExitCode == 0, $"yamllint:\n{await output}{await errors}");
        }
    }

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void EachOverlayRendersSilosAndGatewaysWithServicesBudgetsAndAnAutoscaler(string overlay)
    {
        var objects = RenderOverlay(overlay);
        foreach (var name in new[] { Silo, Gateway })
        {
            var deployment = Single(objects, "Deployment", name);
            var labels = Map(deployment, "spec", "selector", "matchLabels");
            Assert.Equal(labels, Map(deployment, "spec", "template", "metadata", "labels").Where(kv => labels.ContainsKey(kv.Key)).ToDictionary());

            var service = Single(objects, "Service", name);
            Assert.Equal(labels, Map(service, "spec", "selector"));

            var budget = Single(objects, "PodDisruptionBudget", name);
            Assert.Equal(labels, Map(budget, "spec", "selector", "matchLabels"));
            Assert.True(Map(budget, "spec").ContainsKey("maxUnavailable") || Map(budget, "spec").ContainsKey("minAvailable"));
        }

        var autoscaler = Single(objects, "HorizontalPodAutoscaler", Gateway);
        Assert.Equal("autoscaling/v2", autoscaler["apiVersion"]);
        var target = Map(autoscaler, "spec", "scaleTargetRef");
        Assert.Equal(("Deployment", Gateway), ((string)target["kind"]!, (string)target["name"]!));
        Assert.True(int.Parse((string)Map(autoscaler, "spec")["minReplicas"]!, CultureInfo.InvariantCulture) >= 2);
    }

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void EveryDeploymentRollsWithoutLosingCapacityAndHasProbesResourcesAndPodEndpoints(string overlay)
    {
        foreach (var deployment in RenderOverlay(overlay).Where(o => Kind(o) == "Deployment"))
        {
            var rolling = Map(deployment, "spec", "strategy", "rollingUpdate");
            Assert.Equal("0", rolling["maxUnavailable"]?.ToString());

            var pod = Map(deployment, "spec", "template", "spec");
            Assert.Equal("true", Map(pod, "securityContext")["runAsNonRoot"]?.ToString());
            var container = Assert.Single(Containers(deployment));
            Assert.Matches(@"^orleanspush/(silo|gateway):\d+\.\d+\.\d+$", (string)container["image"]!);
            foreach (var probe in new[] { "startupProbe", "readinessProbe", "livenessProbe" })
            {
                Assert.True(container.ContainsKey(probe), $"{Name(deployment)} has no {probe}");
            }

            var requests = Map(container, "resources", "requests");
            Assert.True(requests.ContainsKey("cpu") && requests.ContainsKey("memory"), $"{Name(deployment)} requests no cpu and memory");

            // Endpoints come from the downward API: the pod's IP and name.
            var fromPod = Seq(container, "env").Cast<Dictionary<string, object?>>()
                .Where(v => v.ContainsKey("valueFrom"))
                .ToDictionary(v => (string)v["name"]!, v => (string)Map(v, "valueFrom", "fieldRef")["fieldPath"]!);
            Assert.Equal("status.podIP", fromPod[ClusterEndpoints.PodIpVariable]);
            Assert.Equal("metadata.name", fromPod[ClusterEndpoints.PodNameVariable]);
        }
    }

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void GracePeriodsOutlastPreStopPlusTheHostsShutdownTimeout(string overlay)
    {
        var objects = RenderOverlay(overlay);

        var gateway = Single(objects, "Deployment", Gateway);
        var gatewayPod = Map(gateway, "spec", "template", "spec");
        var container = Assert.Single(Containers(gateway));
        var drainTimeout = TimeSpan.Parse(EnvOf(objects, container)["OrleansPush__Gateway__DrainTimeout"]!, CultureInfo.InvariantCulture);
        var shutdown = new DrainOptions { DrainTimeout = drainTimeout }.ShutdownTimeout;
        var preStop = TimeSpan.FromSeconds(int.Parse((string)Map(container, "lifecycle", "preStop", "sleep")["seconds"]!, CultureInfo.InvariantCulture));
        var grace = TimeSpan.FromSeconds(int.Parse((string)gatewayPod["terminationGracePeriodSeconds"]!, CultureInfo.InvariantCulture));
        Assert.True(grace > preStop + shutdown, $"gateway grace {grace} must exceed preStop {preStop} + shutdown timeout {shutdown}");
        Assert.True(drainTimeout > TimeSpan.Zero && drainTimeout < shutdown);

        var silo = Single(objects, "Deployment", Silo);
        var siloGrace = TimeSpan.FromSeconds(int.Parse((string)Map(silo, "spec", "template", "spec")["terminationGracePeriodSeconds"]!, CultureInfo.InvariantCulture));
        Assert.True(siloGrace > PushSilo.ShutdownTimeout, $"silo grace {siloGrace} must exceed its shutdown timeout {PushSilo.ShutdownTimeout}");
    }

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void PortsAndProbesMatchWhatTheHostsListenOn(string overlay)
    {
        var objects = RenderOverlay(overlay);

        var silo = Assert.Single(Containers(Single(objects, "Deployment", Silo)));
        var siloEnv = EnvOf(objects, silo);
        var siloPorts = Ports(silo);
        Assert.Equal(ClusterSettings.DefaultSiloPort, siloPorts["silo"]);
        Assert.Equal(ClusterSettings.DefaultGatewayPort, siloPorts["gateway"]);
        Assert.Equal(siloPorts["silo"].ToString(CultureInfo.InvariantCulture), siloEnv["OrleansPush__Cluster__SiloPort"]);
        Assert.Equal(siloPorts["gateway"].ToString(CultureInfo.InvariantCulture), siloEnv["OrleansPush__Cluster__GatewayPort"]);
        using (var settings = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "Silo", "appsettings.json"))))
        {
            var cluster = settings.RootElement.GetProperty("OrleansPush").GetProperty("Cluster");
            Assert.Equal(siloPorts["silo"], cluster.GetProperty("SiloPort").GetInt32());
            Assert.Equal(siloPorts["gateway"], cluster.GetProperty("GatewayPort").GetInt32());
        }

        if (siloPorts.TryGetValue("dashboard", out var dashboard))
        {
            Assert.Equal(dashboard.ToString(CultureInfo.InvariantCulture), siloEnv["OrleansPush__Dashboard__Port"]);
            Assert.Equal("0.0.0.0", siloEnv["OrleansPush__Dashboard__BindAddress"]);
            Assert.True(siloEnv.ContainsKey("OrleansPush__Dashboard__Username") && siloEnv.ContainsKey("OrleansPush__Dashboard__Password"),
                "a dashboard port needs OrleansPush__Dashboard__Username and __Password, or the silo refuses to start");
        }

        var gateway = Assert.Single(Containers(Single(objects, "Deployment", Gateway)));
        var gatewayEnv = EnvOf(objects, gateway);
        var gatewayPorts = Ports(gateway);
        Assert.Equal($"http://+:{gatewayPorts["http"]}", gatewayEnv["URLS"]);
        Assert.Equal("Cluster", gatewayEnv["OrleansPush__Cluster__Mode"]);
        if (gatewayPorts.TryGetValue("mqtt", out var mqtt))
        {
            Assert.Equal(mqtt.ToString(CultureInfo.InvariantCulture), gatewayEnv.GetValueOrDefault("OrleansPush__Mqtt__Port") ?? "1883");
        }

        Assert.Equal("/healthz", (string)Map(gateway, "livenessProbe", "httpGet")["path"]!);
        Assert.Equal("/readyz", (string)Map(gateway, "readinessProbe", "httpGet")["path"]!);

        // Every probe and Service port names a port the container declares.
        foreach (var (name, container) in new[] { (Silo, silo), (Gateway, gateway) })
        {
            var declared = Ports(container);
            foreach (var probe in new[] { "startupProbe", "readinessProbe", "livenessProbe" })
            {
                var handler = Map(container, probe);
                var port = (string)(handler.TryGetValue("httpGet", out var http) ? (Dictionary<string, object?>)http! : Map(handler, "tcpSocket"))["port"]!;
                Assert.True(declared.ContainsKey(port), $"{name} {probe} uses port '{port}', which the container does not declare");
            }

            foreach (var port in Seq(Map(Single(objects, "Service", name), "spec"), "ports").Cast<Dictionary<string, object?>>())
            {
                Assert.True(declared.ContainsKey((string)port["targetPort"]!), $"Service {name} targets '{port["targetPort"]}', which the container does not declare");
            }
        }

        // The images expose what the pods declare.
        Assert.Equal(siloPorts.Values.Order(), Exposed("Silo.Dockerfile"));
        Assert.Contains(gatewayPorts["http"], Exposed("Gateway.Dockerfile"));
        Assert.Contains($"URLS=http://+:{gatewayPorts["http"]}", File.ReadAllText(Path.Combine(DeployFolder, "docker", "Gateway.Dockerfile")), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void EveryOrleansPushVariableNamesAnOptionTheAppReadsAndSecretsHoldTheConnectionStrings(string overlay)
    {
        var objects = RenderOverlay(overlay);
        foreach (var deployment in objects.Where(o => Kind(o) == "Deployment"))
        {
            var env = EnvOf(objects, Assert.Single(Containers(deployment)));
            foreach (var key in env.Keys.Where(k => k.StartsWith("OrleansPush__", StringComparison.Ordinal)))
            {
                Assert.True(SettingsCatalog.Default.Knows(key.Replace("__", ":", StringComparison.Ordinal)), $"{Name(deployment)}: {key} names no option of the app");
            }

            var clustering = Enum.Parse<ClusteringProvider>(env["OrleansPush__Cluster__Clustering"]!);
            Assert.NotEqual(ClusteringProvider.Localhost, clustering);
            Assert.True(env.ContainsKey($"OrleansPush__Cluster__{clustering}"), $"{Name(deployment)} has no connection string for {clustering} clustering");
        }

        // Connection strings and keys live in Secrets, never in ConfigMaps.
        foreach (var configMap in objects.Where(o => Kind(o) == "ConfigMap"))
        {
            foreach (var key in Map(configMap, "data").Keys)
            {
                Assert.DoesNotMatch(SecretKeyPattern(), key);
            }
        }

        Assert.Contains(objects, o => Kind(o) == "Secret" && Map(o, "stringData").Keys.Any(k => SecretKeyPattern().IsMatch(k)));
    }

    /// <summary>What the pod's downward API gives the variables that reference it, for reading the effective
    /// configuration.</summary>
    private static readonly Dictionary<string, string> PodFields = new(StringComparer.Ordinal)
    {
        ["status.podIP"] = "10.244.3.17",
        ["metadata.name"] = "orleanspush-pod-0",
    };

    [Theory]
    [MemberData(nameof(OverlayNames))]
    public void EveryServicePortIsServedByAListenerThePodAddressReaches(string overlay)
    {
        var objects = RenderOverlay(overlay);
        foreach (var (name, host) in new[] { (Silo, "Silo"), (Gateway, "Gateway") })
        {
            var container = Assert.Single(Containers(Single(objects, "Deployment", name)));
            var configuration = EffectiveConfiguration(objects, container, host);
            var declared = Ports(container);
            foreach (var port in Seq(Map(Single(objects, "Service", name), "spec"), "ports").Cast<Dictionary<string, object?>>())
            {
                var target = (string)port["targetPort"]!;
                var (bound, listens) = Listener(name, target, configuration);
                Assert.True(declared.TryGetValue(target, out var containerPort), $"{name}: Service port {target} names no container port");
                Assert.True(listens == containerPort, $"{name}: Service port {target} targets {containerPort}, but the listener is on {listens}");
                Assert.True(bound.Count > 0 && bound.All(ReachableFromThePod),
                    $"{name}: Service port {target} ({containerPort}) is served by a listener bound to {string.Join(", ", bound)}, which the pod address does not reach");
            }
        }
    }

    /// <summary>appsettings.json of the host, then the container's environment (as the .NET host reads it: variables
    /// override the file, <c>__</c> is <c>:</c>), with downward-API fields filled in.</summary>
    private static IConfiguration EffectiveConfiguration(List<Dictionary<string, object?>> objects, Dictionary<string, object?> container, string host)
    {
        var env = EnvOf(objects, container);
        foreach (var variable in Seq(container, "env").Cast<Dictionary<string, object?>>().Where(v => v.ContainsKey("valueFrom")))
        {
            env[(string)variable["name"]!] = PodFields[(string)Map(variable, "valueFrom", "fieldRef")["fieldPath"]!];
        }

        return new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(Root, host, "appsettings.json"), optional: false)
            .AddInMemoryCollection(env.Select(kv => KeyValuePair.Create(kv.Key.Replace("__", ":", StringComparison.Ordinal), kv.Value)))
            .Build();
    }

    /// <summary>The addresses and port of the listener behind a container port, read the way the host reads them.</summary>
    private static (List<string> Bound, int Port) Listener(string deployment, string portName, IConfiguration configuration)
    {
        switch (deployment, portName)
        {
            case (Gateway, "http"):
                var urls = (configuration["urls"] ?? "http://localhost:5000").Split(';', StringSplitOptions.RemoveEmptyEntries);
                var uri = urls.Select(u => new Uri(u.Replace("://+", "://any", StringComparison.Ordinal).Replace("://*", "://any", StringComparison.Ordinal))).ToList();
                return (uri.Select(u => u.Host == "any" ? "0.0.0.0" : u.Host).ToList(), uri[0].Port);
            case (Gateway, "mqtt"):
                var mqtt = configuration.GetSection(MqttOptions.Section).Get<MqttOptions>() ?? new MqttOptions();
                return ([mqtt.BindAddress], mqtt.Port);
            case (Silo, "silo" or "gateway"):
                var cluster = configuration.GetSection(ClusterSettings.Section).Get<ClusterSettings>() ?? new ClusterSettings();
                var endpoints = ClusterEndpoints.From(cluster, configuration);
                return ([endpoints.ListenOnAnyHostAddress ? "0.0.0.0" : endpoints.AdvertisedIP.ToString()], portName == "silo" ? cluster.SiloPort : cluster.GatewayPort);
            case (Silo, "dashboard"):
                var dashboard = configuration.GetSection(SiloDashboardOptions.Section).Get<SiloDashboardOptions>() ?? new SiloDashboardOptions();
                return ([dashboard.BindAddress], dashboard.Port);
            default:
                Assert.Fail($"{deployment}: no rule says which listener serves port {portName}; add one here");
                return ([], 0);
        }
    }

    /// <summary>All interfaces, or the pod's own address; never loopback (or a name that resolves to it).</summary>
    private static bool ReachableFromThePod(string host) =>
        host == PodFields["status.podIP"]
        || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)));

    [Theory]
    [InlineData("Silo.Dockerfile", "Silo/Silo.csproj")]
    [InlineData("Gateway.Dockerfile", "Gateway/Gateway.csproj")]
    public void DockerfilesBuildInTheSdkRunOnTheRuntimeAsNonRootAndCopyEveryProjectTheyNeed(string dockerfile, string project)
    {
        var lines = File.ReadAllLines(Path.Combine(DeployFolder, "docker", dockerfile)).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToArray();
        var stages = lines.Where(l => l.StartsWith("FROM ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(2, stages.Length);
        Assert.StartsWith("FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build", stages[0], StringComparison.Ordinal);
        Assert.StartsWith("FROM mcr.microsoft.com/dotnet/aspnet:10.0", stages[1], StringComparison.Ordinal);

        var final = lines.SkipWhile(l => l != stages[1]).ToArray();
        var user = Assert.Single(final, l => l.StartsWith("USER ", StringComparison.Ordinal));
        Assert.DoesNotMatch(@"^USER\s+(root|0)\b", user);
        Assert.Contains(final, l => l.StartsWith("COPY --from=build ", StringComparison.Ordinal));

        var assembly = XmlValue(File.ReadAllText(Path.Combine(Root, project)), "AssemblyName");
        Assert.Equal($"ENTRYPOINT [\"dotnet\", \"{assembly}.dll\"]", final[^1]);

        // Every project the host builds from must be in the build context the image copies.
        foreach (var needed in ProjectClosure(project))
        {
            var folder = Path.GetDirectoryName(needed)!.Replace('\\', '/');
            Assert.Contains(lines, l => l.StartsWith($"COPY {needed} ", StringComparison.Ordinal));
            Assert.Contains(lines, l => l == $"COPY {folder}/ {folder}/");
        }
    }

    [Fact]
    public void LocalClusterScriptIsValidBashAndStopsWhatItStartsByPid()
    {
        var script = Path.Combine(DeployFolder, "local-cluster.sh");
        var text = File.ReadAllText(script);
        Assert.Contains("trap stop_all EXIT", text, StringComparison.Ordinal);
        Assert.DoesNotContain("pkill", text, StringComparison.Ordinal);
        Assert.DoesNotContain("killall", text, StringComparison.Ordinal);
        Assert.Contains("--bind 127.0.0.1", text, StringComparison.Ordinal);

        using var bash = Process.Start(new ProcessStartInfo("bash", ["-n", script]) { RedirectStandardError = true })!;
        Assert.True(bash.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.True(bash.ExitCode == 0, bash.StandardError.ReadToEnd());
    }

    private static Dictionary<string, int> Ports(Dictionary<string, object?> container) =>
        Seq(container, "ports").Cast<Dictionary<string, object?>>()
            .ToDictionary(p => (string)p["name"]!, p => int.Parse((string)p["containerPort"]!, CultureInfo.InvariantCulture));

    private static IEnumerable<int> Exposed(string dockerfile) =>
        File.ReadAllLines(Path.Combine(DeployFolder, "docker", dockerfile))
            .Where(l => l.StartsWith("EXPOSE ", StringComparison.Ordinal))
            .SelectMany(l => l[7..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(p => int.Parse(p, CultureInfo.InvariantCulture))
            .Order();

    private static SortedSet<string> ProjectClosure(string project)
    {
        var all = new SortedSet<string>(StringComparer.Ordinal);
        var pending = new Stack<string>([project]);
        while (pending.TryPop(out var next))
        {
            if (!all.Add(next))
            {
                continue;
            }

            var folder = Path.GetDirectoryName(next)!;
            foreach (Match reference in ProjectReference().Matches(File.ReadAllText(Path.Combine(Root, next))))
            {
                var path = Path.GetRelativePath(Root, Path.GetFullPath(Path.Combine(Root, folder, reference.Groups[1].Value.Replace('\\', '/'))));
                pending.Push(path.Replace('\\', '/'));
            }
        }

        return all;
    }

    private static string XmlValue(string xml, string element) =>
        Regex.Match(xml, $"<{element}>([^<]+)</{element}>").Groups[1].Value;

    [GeneratedRegex("<ProjectReference Include=\"([^\"]+)\"")]
    private static partial Regex ProjectReference();

    [GeneratedRegex("(Redis|Postgres|SigningKey|Password|ConnectionString)$", RegexOptions.IgnoreCase)]
    private static partial Regex SecretKeyPattern();
}
